"""Word n-gram LMs for CTC beam search: build one with IRSTLM, tune its fusion weights on a dev set.

IRSTLM (Debian `irstlm`) estimates the ARPA model (improved Kneser-Ney); decoding reads it through the KenLM
inside flashlight-text (``runtimes.lm_decoder``). The default text is the embedded corpus's KJV sentences, so a
held-out set's own sentences must be kept out (``exclude``) or its WER says how well the LM memorised them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edgeasr.runtimes.errors import UserError
from edgeasr.runtimes.lm_decoder import ARPA_FILE, INFO_FILE, LM_FORMAT, WORDS_FILE, DecodeWeights, WordLM, read_lm_info
from edgeasr.runtimes.vocab import normalize_text

IRSTLM_DIRS = ("/usr/lib/irstlm/bin",)  # Debian's layout; $IRSTLM/bin first when set
SMOOTHING = "improved-kneser-ney"
# Improved Kneser-Ney estimates its discounts from how many n-grams occur once, twice, three times; on a small text
# some of those counts are 0 and IRSTLM writes no model (a log of 0). Witten-Bell needs no such counts.
SMALL_TEXT_SMOOTHING = "witten-bell"
# lm tune's grid: LM weights around the flagships' optima (3.0 for the H100 model, 2.0 after its recipe-3
# fine-tune) and word insertion scores either side of 0, down to -3 since the recipe-3 model's best was -2, then
# the grid's edge
TUNE_LM_WEIGHTS = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0)
TUNE_WORD_SCORES = (-3.0, -2.0, -1.0, 0.0, 1.0)


def grid_edges(best: dict, lm_weights=TUNE_LM_WEIGHTS, word_scores=TUNE_WORD_SCORES) -> list[str]:
    """The tuned values that sit on the grid's boundary ("word_score -3"): there the optimum may lie beyond it."""
    return [f"{key} {best[key]:g}" for key, grid in (("lm_weight", lm_weights), ("word_score", word_scores))
            if best[key] in (min(grid), max(grid))]


def irstlm_tool(name: str) -> Path:
    dirs = ([os.environ["IRSTLM"] + "/bin"] if os.environ.get("IRSTLM") else []) + list(IRSTLM_DIRS)
    for d in dirs:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return p
    raise UserError(f"IRSTLM's {name} not found: install the Debian package irstlm (make setup does)")


def manifest_texts(path: Path) -> set[str]:
    """Normalised ``text`` of every row of a JSONL manifest (audio is not needed to exclude sentences)."""
    if not Path(path).is_file():
        raise UserError(f"{path}: manifest not found")
    texts = set()
    for n, line in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            texts.add(normalize_text(str(row["text"])))
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path}:{n}: not a manifest row with a text field") from None
    return texts


def build_lm(sentences: Iterable[str], out: Path, order: int = 4, exclude: set[str] = frozenset(),
             sources: list[str] | None = None) -> dict:
    """Estimate an ``order``-gram LM over the normalised ``sentences`` minus ``exclude`` into the LM directory
    ``out`` (built next to it, then renamed into place). Returns its ``lm.json``."""
    if not 1 <= order <= 6:
        raise UserError(f"--order must be 1..6, got {order}")
    out = Path(out)
    if out.exists() and not (out / INFO_FILE).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an LM directory; choose another --out")
    build, compile_ = irstlm_tool("build-lm.sh"), irstlm_tool("compile-lm")
    lines, seen, dropped = [], set(), 0
    for s in sentences:
        t = normalize_text(s)
        if not t or t in seen:
            continue
        if t in exclude:
            dropped += 1
            continue
        seen.add(t)
        lines.append(t)
    if not lines:
        raise UserError("no text left to build an LM from (empty input, or everything excluded)")
    from edgeasr.runtimes.files import remove_stale_temps

    words = sorted({w for t in lines for w in t.split()})
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # the build directory of a killed earlier run
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the LM is an ordinary artifact
    try:
        (tmp / "text.txt").write_text("".join(f"<s> {t} </s>\n" for t in lines))
        env = {**os.environ, "IRSTLM": str(build.parent.parent)}
        for smoothing in (SMOOTHING, SMALL_TEXT_SMOOTHING):
            shutil.rmtree(tmp / "stat", ignore_errors=True)
            _run([str(build), "-i", str(tmp / "text.txt"), "-n", str(order), "-o", str(tmp / "lm.ilm.gz"), "-k", "1",
                  "-s", smoothing, "-t", str(tmp / "stat")], env)
            if (tmp / "lm.ilm.gz").is_file():  # build-lm.sh exits 0 even when its estimate failed
                break
        else:
            raise UserError(f"IRSTLM could not estimate a {order}-gram LM from {len(lines)} sentences "
                            f"(try a lower --order or more text)")
        _run([str(compile_), str(tmp / "lm.ilm.gz"), "--text=yes", str(tmp / ARPA_FILE)], env)
        for junk in ("text.txt", "lm.ilm.gz", "stat"):
            p = tmp / junk
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        (tmp / WORDS_FILE).write_text("\n".join(words) + "\n")
        info = {"format": LM_FORMAT, "version": 1, "order": order, "smoothing": smoothing, "toolkit": "IRSTLM",
                "sentences": len(lines), "words": len(words), "tokens": sum(len(t.split()) for t in lines),
                "excluded_sentences": dropped, "sources": sources or [],
                "arpa_sha256": hashlib.sha256((tmp / ARPA_FILE).read_bytes()).hexdigest(),
                "weights": {**DecodeWeights().to_dict(), "tuned_on": None}}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def _run(cmd: list[str], env: dict) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        tail = " ".join((r.stderr or r.stdout).split())[-300:]
        raise UserError(f"{Path(cmd[0]).name} failed (exit {r.returncode}): {tail}")


def _replace_dir(new: Path, out: Path) -> None:
    """Swap ``new`` in as ``out``; a reader sees the old LM or the new one, never a half-written directory."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(new, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, out)


def tune_weights(lm_dir: Path, logprobs: list[np.ndarray], refs: list[str], vocab, blank_id: int,
                 lm_weights=TUNE_LM_WEIGHTS, word_scores=TUNE_WORD_SCORES, beam_size: int | None = None,
                 progress=None) -> tuple[dict, list[dict]]:
    """Grid-search (lm_weight, word_score) for the lowest WER on ``logprobs``/``refs`` at ``beam_size`` (default:
    the LM's recorded beam). Returns (best, table); best also holds the beam. ``progress()`` is called per
    utterance decoded (grid points x utterances in all)."""
    from edgeasr.evaluation.metrics import wer

    if not logprobs:
        raise UserError("no utterances to tune on")
    base = WordLM(lm_dir, vocab, blank_id)
    beam = int(beam_size or base.weights.beam_size)
    table = []
    for a in lm_weights:
        for b in word_scores:
            base.weights = DecodeWeights(**{**base.weights.to_dict(), "lm_weight": a, "word_score": b,
                                            "beam_size": beam})
            hyps = []
            for lp in logprobs:
                hyps.append(base.decode(lp))
                if progress:
                    progress()
            table.append({"lm_weight": a, "word_score": b, "beam_size": beam, "wer": round(100 * wer(refs, hyps), 2)})
    best = min(table, key=lambda r: (r["wer"], r["lm_weight"], abs(r["word_score"])))
    return best, table


def save_weights(lm_dir: Path, best: dict, tuned_on: str, greedy_wer: float) -> dict:
    """Record tuned weights in ``lm.json`` (atomically) so every later decode uses them."""
    from edgeasr.runtimes.files import atomic_write

    info = read_lm_info(lm_dir)
    weights = {**info.get("weights", {}), "lm_weight": best["lm_weight"], "word_score": best["word_score"],
               "beam_size": best["beam_size"],
               "tuned_on": tuned_on, "tuned_wer": best["wer"], "greedy_wer": round(greedy_wer, 2)}
    info["weights"] = weights
    atomic_write(Path(lm_dir) / INFO_FILE, (json.dumps(info, indent=2) + "\n").encode())
    return info
