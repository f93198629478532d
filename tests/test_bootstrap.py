"""Confidence intervals (issue 34 item 3): the seeded bootstrap over utterances of WER and the paired bootstrap of
ΔWER in ``edgeasr.evaluation.bootstrap``."""
import numpy as np
import pytest

from edgeasr.evaluation import bootstrap as B
from edgeasr.evaluation.metrics import wer

REFS = ["the cat sat on the mat", "a dog ran home", "hello world", "one two three four", "", "it is what it is"] * 6
HYPS = ["the cat sat on mat", "a dog run home now", "hello world", "one two four", "noise", "it is it is"] * 6


def test_per_utterance_pairs_add_up_to_the_corpus_wer():
    p = B.word_errors(REFS, HYPS)
    assert p.shape == (30, 2)  # the empty reference is left out, as metrics.wer leaves it out
    assert p[:4].tolist() == [[1, 6], [2, 4], [0, 2], [1, 4]]
    assert B.wer_point(p) == pytest.approx(wer(REFS, HYPS), abs=1e-12)
    with pytest.raises(ValueError):
        B.word_errors(REFS, HYPS[:-1])


def test_seeded_and_deterministic():
    p = B.word_errors(REFS, HYPS)
    assert B.wer_ci(p) == B.wer_ci(p)
    assert B.wer_ci(p, seed=7) == B.wer_ci(p, seed=7)
    assert B.wer_ci(p, seed=7) != B.wer_ci(p, seed=8)
    other = B.word_errors(REFS, ["the cat sat on the mat"] * len(REFS))
    assert B.delta_ci(p, other) == B.delta_ci(p, other)


def test_interval_contains_the_point_estimate():
    rng = np.random.default_rng(1)
    for _ in range(20):
        words = rng.integers(1, 30, size=60)
        errors = rng.binomial(words, rng.uniform(0.05, 0.6))
        pairs = np.stack([errors, words], axis=1)
        lo, hi = B.wer_ci(pairs)
        assert lo <= B.wer_point(pairs) <= hi and lo < hi
    s = B.summary(B.word_errors(REFS, HYPS))
    assert s["ci95"][0] <= s["wer"] <= s["ci95"][1]


def test_paired_delta_of_identical_systems_is_zero_and_not_significant():
    p = B.word_errors(REFS, HYPS)
    assert B.delta_ci(p, p) == (0.0, 0.0)
    assert not B.significant(B.delta_ci(p, p))
    assert B.delta_summary(p, p) == {"delta": 0.0, "delta_ci95": [0.0, 0.0], "significant": False}


def test_a_clearly_better_system_is_significant_and_signed():
    p = B.word_errors(REFS, HYPS)
    perfect = B.word_errors(REFS, [r or "noise" for r in REFS])
    lo, hi = B.delta_ci(p, perfect)  # perfect - p < 0
    assert hi < 0 and B.significant((lo, hi))
    d = B.delta_summary(p, perfect)
    assert d["delta"] < 0 and d["significant"] and d["delta_ci95"][0] <= d["delta"] <= d["delta_ci95"][1]
    with pytest.raises(ValueError):  # pairing needs the same utterances
        B.delta_ci(p, p[:-1])


def test_empty_input():
    empty = B.word_errors([], [])
    assert B.wer_ci(empty) == (0.0, 0.0) and B.wer_point(empty) == 0.0


def test_parity_cells_get_intervals_and_the_table_shows_them():
    from edgeasr.evaluation.parity import _intervals
    from edgeasr.evaluation.report_html import rows

    perfect = [r or "noise" for r in REFS]
    base = {"model": "m", "backend": "ort", "precision": "fp32", "mode": "step", "file_mb": 1.0}
    cells = [{**base, "id": "ref", "role": "reference", "status": "reference", "reference": None,
              "hypotheses": HYPS, "metrics": {"wer": wer(REFS, HYPS), "wer_delta": 0.0}},
             {**base, "id": "same", "role": "candidate", "status": "ok", "reference": "ref", "hypotheses": HYPS,
              "metrics": {"wer": wer(REFS, HYPS), "wer_delta": 0.0}},
             {**base, "id": "better", "role": "candidate", "status": "ok", "reference": "ref", "hypotheses": perfect,
              "metrics": {"wer": 0.0, "wer_delta": -wer(REFS, HYPS)}},
             {**base, "id": "broken", "role": "candidate", "status": "error", "reason": "x"}]
    _intervals(cells, REFS)
    ref, same, better, broken = cells
    assert ref["metrics"]["wer_delta_ci95"] == [0.0, 0.0] and ref["metrics"]["significant"] is False
    assert same["metrics"]["wer_delta_ci95"] == [0.0, 0.0] and same["metrics"]["significant"] is False
    lo, hi = better["metrics"]["wer_delta_ci95"]
    assert hi < 0 and better["metrics"]["significant"] is True
    assert better["metrics"]["wer_ci95"] == [0.0, 0.0]
    w = ref["metrics"]["wer"]
    assert ref["metrics"]["wer_ci95"][0] <= w <= ref["metrics"]["wer_ci95"][1]
    assert "metrics" not in broken
    table = rows({"lm": None, "cells": cells})
    head = table[0]
    assert {"WER 95% CI", "ΔWER 95% CI", "sig"} <= set(head)
    by_id = {c["id"]: r for c, r in zip(sorted(cells, key=lambda c: c["status"] != "reference"), table[1:])}
    assert by_id["better"][head.index("sig")] == "yes" and by_id["same"][head.index("sig")] == "no"
