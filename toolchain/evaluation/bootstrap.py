"""95 % confidence intervals for WER and ΔWER: the bootstrap over utterances (seed 001 reports its WERs this way).

One implementation for every report that compares WERs (``eval``, ``parity``, ``bench --test``, ``experiment``,
``analyze band-mask``). Each utterance is one pair ``(word errors, reference words)`` (jiwer on normalised text,
the same alignment ``metrics.wer`` scores); the corpus WER is ``sum(errors) / sum(words)``. A bootstrap sample
draws the utterances with replacement and recomputes that ratio; the interval is the 2.5th..97.5th percentile of
``n_boot`` samples (percentile bootstrap). ΔWER is *paired*: both systems are resampled with the same utterance
indices, so the interval reflects only how the two differ on the same audio, not how hard the test set is. A ΔWER
whose interval holds 0 is not significant.

Plain seeded numpy (``np.random.default_rng(seed)``): deterministic, and available on a device install (scipy's
``stats.bootstrap`` is in the [train] extra only). Utterances with an empty normalised reference are left out, as
``metrics.wer`` leaves them out.
"""
from __future__ import annotations

import numpy as np

N_BOOT = 1000
SEED = 0
LEVEL = 0.95


def word_errors(refs: list[str], hyps: list[str]) -> np.ndarray:
    """``[N, 2]`` int64: (word errors, reference words) per utterance with a non-empty normalised reference."""
    import jiwer

    from edgeasr.runtimes.vocab import normalize_text

    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    r = [normalize_text(x) for x in refs]
    h = [normalize_text(x) for x in hyps]
    keep = [i for i, x in enumerate(r) if x]
    if not keep:
        return np.zeros((0, 2), np.int64)
    out = jiwer.process_words([r[i] for i in keep], [h[i] for i in keep])
    pairs = np.zeros((len(keep), 2), np.int64)
    for n, (chunks, i) in enumerate(zip(out.alignments, keep)):
        errors = 0
        for c in chunks:
            if c.type in ("substitute", "delete"):
                errors += c.ref_end_idx - c.ref_start_idx
            elif c.type == "insert":
                errors += c.hyp_end_idx - c.hyp_start_idx
        pairs[n] = errors, len(r[i].split())
    return pairs


def _ratio(errors: np.ndarray, words: np.ndarray) -> np.ndarray:
    return np.divide(errors, words, out=np.zeros(errors.shape, np.float64), where=words > 0)


def _indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def wer_point(pairs) -> float:
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    words = int(pairs[:, 1].sum())
    return float(pairs[:, 0].sum() / words) if words else 0.0


def wer_ci(pairs, n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL) -> tuple[float, float]:
    """Percentile-bootstrap interval of the corpus WER (a fraction) over utterances."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return 0.0, 0.0
    idx = _indices(len(pairs), n_boot, seed)
    return _interval(_ratio(pairs[idx, 0].sum(1), pairs[idx, 1].sum(1)), level)


def delta_ci(base, other, n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL) -> tuple[float, float]:
    """Paired-bootstrap interval of WER(other) - WER(base) (fractions) over the same utterances, resampled together."""
    a = np.asarray(base, np.int64).reshape(-1, 2)
    b = np.asarray(other, np.int64).reshape(-1, 2)
    if len(a) != len(b):
        raise ValueError(f"paired bootstrap needs the same utterances: {len(a)} vs {len(b)}")
    if not np.array_equal(a[:, 1], b[:, 1]):
        raise ValueError("paired bootstrap needs the same references (reference word counts differ)")
    if len(a) == 0:
        return 0.0, 0.0
    idx = _indices(len(a), n_boot, seed)
    words = a[idx, 1].sum(1)
    return _interval(_ratio(b[idx, 0].sum(1) - a[idx, 0].sum(1), words), level)


def significant(ci) -> bool:
    """A ΔWER interval that does not hold 0."""
    lo, hi = ci
    return not (lo <= 0.0 <= hi)


def summary(pairs, scale: float = 100.0, digits: int = 2, **kw) -> dict:
    """``{"wer", "ci95"}`` scaled (percent by default) and rounded, as the reports write them."""
    lo, hi = wer_ci(pairs, **kw)
    return {"wer": round(scale * wer_point(pairs), digits), "ci95": [round(scale * lo, digits), round(scale * hi, digits)]}


def delta_summary(base, other, scale: float = 100.0, digits: int = 2, **kw) -> dict:
    """``{"delta", "delta_ci95", "significant"}`` of other against base, scaled and rounded."""
    ci = delta_ci(base, other, **kw)
    return {"delta": round(scale * (wer_point(other) - wer_point(base)), digits),
            "delta_ci95": [round(scale * ci[0], digits), round(scale * ci[1], digits)],
            "significant": significant(ci)}


def fmt_ci(ci, digits: int = 1, scale: float = 1.0) -> str:
    """``[lo, hi]`` as ``lo–hi`` for tables ('-' when missing)."""
    if not ci:
        return "-"
    return f"{scale * ci[0]:.{digits}f}–{scale * ci[1]:.{digits}f}"
