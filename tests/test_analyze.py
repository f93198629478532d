"""``edgeasr analyze attention`` / ``band-mask`` (issue 34 items 1, 2 and its bad input): the mixer's analysis hooks,
the attention.json / band_mask.json contracts, self-contained HTML, one-line errors that write nothing. A tiny
random-init mha checkpoint (d_model=32, 2 layers, 2 heads, left context 8) and the tiny synthesized corpus."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgeasr.cli import main
from edgeasr.models.checkpoint import load_checkpoint, save_checkpoint
from edgeasr.runtimes.features import FbankOptions
from edgeasr.runtimes.vocab import BLANK_ID, VOCAB
from test_encoder import small_encoder

LEFT = 8  # test_encoder.SMALL["mha"]


def _save(run_dir: Path, mixer: str) -> Path:
    save_checkpoint(run_dir, small_encoder(mixer),
                    {"features": FbankOptions().to_dict(), "vocab": list(VOCAB), "blank_id": BLANK_ID})
    return run_dir


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    return {"mha": _save(root / "mha", "mha"), "none": _save(root / "none", "none")}


def _cli(*args):
    return CliRunner().invoke(main, ["analyze", *map(str, args)])


def test_hooks_are_off_by_default_and_change_nothing_when_neutral():
    torch.manual_seed(0)
    from edgeasr.models.mixers.mha import MHAMixer

    m = MHAMixer(32, heads=2, left_context=LEFT, dropout=0.0).eval()
    assert m.capture is None and m.band is None
    x, lens = torch.randn(2, 21, 32), torch.tensor([21, 15])
    with torch.no_grad():
        ref = {d: m(x, lens, d) for d in ("l2r", "bi")}
        seen = []
        m.capture = seen.append  # the l2r capture takes the T x T path: same output as the blocked one
        for d in ("l2r", "bi"):
            assert torch.allclose(m(x, lens, d), ref[d], atol=1e-5)
        assert [tuple(a.shape) for a in seen] == [(2, 2, 21, 21)] * 2
        assert torch.allclose(seen[0].sum(-1), torch.ones(2, 2, 21), atol=1e-5)
        d = torch.arange(21).view(-1, 1) - torch.arange(21).view(1, -1)
        assert float(seen[0][..., (d < 0) | (d > LEFT)].abs().max()) == 0.0  # causal, bounded left context
        m.capture = None
        m.band = LEFT  # a band as wide as the left context masks nothing in l2r
        assert torch.allclose(m(x, lens, "l2r"), ref["l2r"], atol=1e-5)
        m.band = 1
        assert not torch.allclose(m(x, lens, "l2r"), ref["l2r"], atol=1e-3)
        # the band acts alike in the blocked form, the T x T form and the streaming step
        from edgeasr.models.mixers import mha

        banded = m(x, lens, "l2r")
        mha.BLOCKED_L2R = False
        try:
            assert torch.allclose(m(x, lens, "l2r"), banded, atol=1e-5)
        finally:
            mha.BLOCKED_L2R = True
        state = {s.name: torch.zeros(2, *s.shape) for s in m.state_specs()}
        outs = []
        for i in range(0, 21, 4):
            y, state = m.step(x[:, i:i + 4], state)
            outs.append(y)
        assert torch.allclose(torch.cat(outs, 1), banded, atol=1e-5)


def test_strict_chunks_batched_equal_one_chunk_per_call(ckpt):
    from edgeasr.evaluation.attention import chunk_logprobs

    net, _ = load_checkpoint(ckpt["mha"])
    f = np.random.default_rng(0).normal(size=(70, 80)).astype(np.float32)
    got = chunk_logprobs(net, f, 16, "strict")
    with torch.no_grad():
        one = [net(torch.from_numpy(f[i:i + 16])[None], torch.tensor([len(f[i:i + 16])]))[0][0]
               for i in range(0, 70, 16)]
    assert got.shape == (18, len(VOCAB)) and np.allclose(got, torch.cat(one).numpy(), atol=1e-5)
    assert chunk_logprobs(net, f, 16, "stream").shape == (18, len(VOCAB))


@pytest.mark.parametrize("mode", ["strict", "stream"])
def test_attention_report(ckpt, corpus, tmp_path, mode):
    out = tmp_path / "att"
    r = _cli("attention", ckpt["mha"], "--test", corpus / "test.jsonl", "--chunk-ms", 160, "--mode", mode,
             "--out", out, "--max-utterances", 3)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "attention.json").read_text())
    assert rep["mode"] == mode and rep["utterances"] == 3 and rep["chunk_ms"] == 160
    assert [sorted(lay) for lay in rep["layers"]] == [["band_mass", "layer", "mean_distance"]] * 2
    assert [lay["layer"] for lay in rep["layers"]] == [0, 1]
    C = 4  # 160 ms = 16 fbank frames = 4 encoder frames
    for lay in rep["layers"]:
        bm = [lay["band_mass"][str(k)] for k in range(1, 9)]
        assert list(lay["band_mass"]) == [str(k) for k in range(1, 9)]
        assert all(0.0 <= b <= 1.0 + 1e-6 for b in bm) and bm == sorted(bm)
        assert lay["mean_distance"] >= 0
        if mode == "strict":  # within a chunk of 4 frames no key is more than 3 frames away
            assert bm[2] == pytest.approx(1.0, abs=1e-3) and lay["mean_distance"] <= 3
        else:  # l2r with a left context of 8: every key is within 8 frames
            assert bm[7] == pytest.approx(1.0, abs=1e-3)
    maps = np.asarray(rep["maps"])
    assert maps.shape == ((2, C, C) if mode == "strict" else (2, C, LEFT + C))
    assert np.allclose(maps.sum(-1), 1.0, atol=1e-3)  # every mean row is a distribution
    for name in ("attention.png", "attention_layer0.png", "attention_layer1.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "attention.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "http" not in page.replace("http-equiv", "")


def test_band_mask_report(ckpt, corpus, tmp_path):
    out = tmp_path / "bm"
    # 160 ms strict chunks hold 4 encoder frames: a band of +-3 masks nothing, +-1 does
    r = _cli("band-mask", ckpt["mha"], "--test", corpus / "test.jsonl", "--chunk-ms", 160, "--diagonals", "1,3",
             "--out", out, "--max-utterances", 4)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "band_mask.json").read_text())
    assert [row["diagonals"] for row in rep["rows"]] == [None, 1, 3]
    for row in rep["rows"]:
        assert {"diagonals", "wer", "ci95", "delta", "delta_ci95"} <= set(row)
        assert row["ci95"][0] <= row["wer"] <= row["ci95"][1]
        assert row["delta_ci95"][0] <= row["delta"] <= row["delta_ci95"][1]
    base, _, wide = rep["rows"]
    assert base["delta"] == 0.0 and base["delta_ci95"] == [0.0, 0.0]
    assert wide["wer"] == base["wer"] and wide["delta_ci95"] == [0.0, 0.0] and wide["significant"] is False
    md = (out / "band_mask.md").read_text()
    assert "| unmasked |" in md and "ΔWER" in md
    assert "<table>" in (out / "band_mask.html").read_text()


@pytest.mark.parametrize("cmd", ["attention", "band-mask"])
def test_bad_input_one_line_nothing_written(ckpt, corpus, tmp_path, cmd):
    test = corpus / "test.jsonl"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cases = [([ckpt["none"], "--test", test, "--chunk-ms", 160], "has no attention"),
             ([ckpt["mha"], "--test", test, "--chunk-ms", 100], "multiple of 40 ms"),
             ([ckpt["mha"], "--test", test, "--chunk-ms", 0], "multiple of 40 ms"),
             ([ckpt["mha"], "--test", empty, "--chunk-ms", 160], "no usable rows"),
             ([ckpt["mha"], "--test", tmp_path / "nope.jsonl", "--chunk-ms", 160], "not found")]
    if cmd == "band-mask":
        cases += [([ckpt["mha"], "--test", test, "--chunk-ms", 160, "--diagonals", "0"], ">= 1"),
                  ([ckpt["mha"], "--test", test, "--chunk-ms", 160, "--diagonals", "3,-2"], ">= 1")]
    for i, (args, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        r = _cli(cmd, *args, "--out", out)
        assert r.exit_code == 2, (args, r.output)
        err = r.stderr.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, (args, err)
        assert not out.exists(), args
