"""Accuracy-aware int8 (DESIGN.md §4): rank the quantized nodes by sensitivity, fall back to fp32 until ΔWER fits.

Sensitivity of a node = SQNR (dB, higher is safer) of what int8 does to it, from
``onnxruntime.quantization.qdq_loss_debug``: the activation's SQNR before vs after its Q/DQ pair in the QDQ model
(``create_activation_matching`` + ``compute_signal_to_quantization_noice_ratio``, on streaming
calibration samples) combined with the weight's SQNR
(``compute_weight_error``) as independent noise powers: ``1/snr = 1/snr_act + 1/snr_weight`` (linear).

Greedy fallback: with every candidate quantized, measure ΔWER = WER(int8) - WER(fp32) on the dev set (ONNX Runtime,
the runtimes' own offline/streaming session and greedy CTC). While ΔWER > budget, put the next most sensitive nodes
back to fp32 (1, 2, 4, ... at a time), re-quantize from the cached calibration ranges, measure again. If the budget
is still missed with ``max_fallback`` of the nodes in fp32, the budget is unreachable (an int8 file that is mostly
fp32 is not what was asked for).
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from edgeasr.runtimes.vocab import normalize_text


class BudgetError(Exception):
    """The ΔWER budget cannot be met even with every sensitive node back in fp32."""


# --- WER (word edit distance on normalised text; the same definition as jiwer's corpus WER) -------------------
def _edits(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def corpus_wer(refs: list[str], hyps: list[str]) -> float:
    errs = words = 0
    for r, h in zip(refs, hyps):
        rw, hw = normalize_text(r).split(), normalize_text(h).split()
        if not rw:
            continue
        errs += _edits(rw, hw)
        words += len(rw)
    return errs / words if words else 0.0


def transcribe_set(model_path, utterances: list[tuple[np.ndarray, str]], threads: int = 1,
                   progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Greedy CTC transcripts of ``[(features, ref)]`` with the model on ONNX Runtime CPU; ``progress(done,
    total)`` per utterance."""
    from edgeasr.runtimes.backends import get_backend
    from edgeasr.runtimes.session import OfflineSession

    backend = get_backend("ort", model_path, threads=threads)
    try:
        sess = OfflineSession(backend)
        hyps = []
        for f, _ in utterances:
            hyps.append(sess.decode(sess.logprobs(f)))
            if progress:
                progress(len(hyps), len(utterances))
        return hyps
    finally:
        backend.deactivate()


def dev_wer(model_path, utterances, threads: int = 1, progress: Callable[[int, int], None] | None = None) -> float:
    return corpus_wer([t for _, t in utterances], transcribe_set(model_path, utterances, threads, progress))


# --- SQNR --------------------------------------------------------------------------------------------------------
def _combine(*snrs_db: float) -> float:
    noise = sum(10 ** (-s / 10) for s in snrs_db if s is not None and math.isfinite(s))
    return float("inf") if noise == 0 else -10 * math.log10(noise)


def node_sqnr(fp32_path, qdq_path, reader, nodes: list[str], max_samples: int = 16,
              progress: Callable[[int, int], None] | None = None) -> dict[str, dict]:
    """{node: {"sqnr_db", "act_sqnr_db", "weight_sqnr_db"}} for the quantized ``nodes`` of ``qdq_path``;
    ``progress(done, total)`` per calibration sample run."""
    from onnxruntime.quantization import qdq_loss_debug as dbg

    fp32, qdq = onnx.load(str(fp32_path)), onnx.load(str(qdq_path))
    by_name = {n.name: n for n in fp32.graph.node}
    with tempfile.TemporaryDirectory(prefix="edgeasr-sqnr.") as tmp:
        aug = str(Path(tmp) / "aug.onnx")
        dbg.modify_model_output_intermediate_tensors(str(qdq_path), aug, ["QuantizeLinear", "DequantizeLinear"])
        reader.rewind()
        limited = _Limited(reader, max_samples, progress)
        acts = dbg.collect_activations(aug, limited)
        match = dbg.create_activation_matching(acts)  # pre/post Q/DQ pairs (no float model: local noise only)
        act_err = {k: {"qdq_err": dbg.compute_signal_to_quantization_noice_ratio(v["pre_qdq"], v["post_qdq"])}
                   for k, v in match.items()}
        w_err = dbg.compute_weight_error(dbg.create_weight_matching(str(fp32_path), str(qdq_path)))
    reader.rewind()
    del qdq
    out = {}
    for name in nodes:
        n = by_name.get(name)
        if n is None:
            continue
        a = act_err.get(n.input[0], {}).get("qdq_err")
        w = w_err.get(n.input[1])
        out[name] = {"sqnr_db": round(_combine(a, w), 2), "act_sqnr_db": None if a is None else round(a, 2),
                     "weight_sqnr_db": None if w is None else round(w, 2)}
    return out


class _Limited:
    """The first ``n`` samples of a reader, as an iterable (collect_activations iterates its reader)."""

    def __init__(self, reader, n: int, progress: Callable[[int, int], None] | None = None):
        self.reader, self.n, self.progress = reader, n, progress

    def __iter__(self):
        for i in range(self.n):
            s = self.reader.get_next()
            if s is None:
                return
            if self.progress:
                self.progress(i, self.n)
            yield s


# --- greedy fallback ---------------------------------------------------------------------------------------------
@dataclass
class FallbackResult:
    quantized: list[str]
    kept: list[str]
    wer_fp32: float
    wer_int8: float
    trials: list[dict] = field(default_factory=list)

    @property
    def delta(self) -> float:
        return self.wer_int8 - self.wer_fp32


def greedy_fallback(candidates: list[str], sensitivity: dict[str, dict], build: Callable[[list[str]], Path],
                    evaluate: Callable[[Path], float], wer_fp32: float, budget: float,
                    max_fallback: float = 0.5, first: tuple[Path, float] | None = None,
                    log: Callable[[str], None] | None = None) -> FallbackResult:
    """Fall back the most sensitive nodes (lowest SQNR first) until ``evaluate(build(nodes)) - wer_fp32 <= budget``.

    ``build(nodes)`` writes a QDQ model quantizing ``nodes`` and returns its path; ``evaluate(path)`` is its dev WER.
    ``first``: (path, WER) of the all-quantized model when already measured. Raises BudgetError when unreachable."""
    order = sorted(candidates, key=lambda n: sensitivity.get(n, {}).get("sqnr_db", float("inf")))
    limit = int(math.floor(max_fallback * len(candidates)))
    trials = []
    k, step = 0, 1
    wer = first[1] if first else evaluate(build(list(candidates)))
    trials.append({"kept_fp32": 0, "wer": wer, "delta_wer": wer - wer_fp32})
    while wer - wer_fp32 > budget:
        if k >= limit:
            raise BudgetError(f"ΔWER budget {budget:.4f} unreachable: with {k} of {len(candidates)} nodes back in "
                              f"fp32 (limit {max_fallback:.0%}) ΔWER is still {wer - wer_fp32:+.4f}")
        k = min(limit, k + step)
        step *= 2
        kept = set(order[:k])
        wer = evaluate(build([n for n in candidates if n not in kept]))
        trials.append({"kept_fp32": k, "wer": wer, "delta_wer": wer - wer_fp32})
        if log:
            log(f"fallback: {k} node(s) in fp32 -> ΔWER {wer - wer_fp32:+.4f}")
    kept = set(order[:k])
    return FallbackResult([n for n in candidates if n not in kept], [n for n in order[:k]], wer_fp32, wer, trials)
