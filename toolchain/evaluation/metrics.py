"""WER/CER with jiwer on normalised text (DESIGN.md §7)."""
from __future__ import annotations

import jiwer

from edgeasr.runtimes.vocab import normalize_text


def _pairs(refs: list[str], hyps: list[str]) -> tuple[list[str], list[str]]:
    refs = [normalize_text(r) for r in refs]
    hyps = [normalize_text(h) for h in hyps]
    keep = [i for i, r in enumerate(refs) if r]  # jiwer rejects empty references
    return [refs[i] for i in keep], [hyps[i] for i in keep]


def wer(refs: list[str], hyps: list[str]) -> float:
    r, h = _pairs(refs, hyps)
    return float(jiwer.wer(r, h)) if r else 0.0


def cer(refs: list[str], hyps: list[str]) -> float:
    r, h = _pairs(refs, hyps)
    return float(jiwer.cer(r, h)) if r else 0.0
