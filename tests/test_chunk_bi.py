"""The chunk-bi direction mode (issue 30): L2R carried across the stream + R2L within each chunk from its initial
state, averaged. Full form == a per-chunk loop; streaming ``Encoder.step`` chunk by chunk == the full form (1e-5)
over chunk sizes and utterance lengths; mode strings and their errors; the DirDrop training plan; ONNX step and full
graphs on ONNX Runtime; CLI errors in one line."""
import json
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgeasr.cli import main
from edgeasr.exporters.onnx_export import ExportError, export
from edgeasr.exporters.trt_lint import lint_model
from edgeasr.exporters.verify import session, stream_onnx
from edgeasr.models.checkpoint import load_checkpoint
from edgeasr.models.config import EncoderConfig
from edgeasr.models.conformer import Encoder
from edgeasr.models.dirdrop import chunked, draw_chunk_bi, parse_mode
from edgeasr.runtimes.metadata import read_metadata
from test_encoder import small_encoder, stream
from test_export import save_tiny

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
BIDIRECTIONAL = ("rwkv", "mamba2")


def feats(B: int, T: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, 80, generator=g) * 3 + 10


# --- full form -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mixer", BIDIRECTIONAL)
@pytest.mark.parametrize("chunk", [1, 3, 8, 40])
def test_r2l_within_chunks_equals_a_loop_over_chunks(mixer, chunk):
    m = small_encoder(mixer).layers[0].mixer
    x = torch.randn(3, 29, 32)
    lens = torch.tensor([29, 17, 4])
    with torch.no_grad():
        got = m(x, lens, "chunk-r2l", chunk)
        both = m(x, lens, "chunk-bi", chunk)
        l2r = m(x, lens, "l2r")
        for s in range(0, 29, chunk):
            part = torch.clamp(lens - s, 0, chunk)
            ref = m(x[:, s:s + chunk], part, "r2l")
            for b in range(3):
                n = int(part[b])
                if n:
                    assert (got[b, s:s + n] - ref[b, :n]).abs().max().item() <= 1e-5
    for b in range(3):
        n = int(lens[b])
        assert (both[b, :n] - 0.5 * (l2r[b, :n] + got[b, :n])).abs().max().item() <= 1e-6


@pytest.mark.parametrize("mixer", BIDIRECTIONAL)
def test_chunk_larger_than_the_utterance_is_bi_and_smaller_is_neither(mixer):
    model = small_encoder(mixer)
    x, lens = feats(1, 50, 1), torch.tensor([50])
    out = {}
    with torch.no_grad():
        for mode, cf in (("bi", None), ("l2r", None), ("chunk-bi", 400), ("chunk-bi", 16)):
            model.set_direction(mode, cf)
            out[(mode, cf)] = model(x, lens)[2]
    assert (out[("chunk-bi", 400)] - out[("bi", None)]).abs().max() <= 1e-5
    assert (out[("chunk-bi", 16)] - out[("bi", None)]).abs().max() > 1e-3
    assert (out[("chunk-bi", 16)] - out[("l2r", None)]).abs().max() > 1e-3


# --- step form == full form ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mixer", BIDIRECTIONAL)
@pytest.mark.parametrize("chunk_frames", [16, 32, 64, 128])
def test_streaming_step_equals_full_chunk_bi(mixer, chunk_frames):
    """Each utterance streamed alone (exactly chunk_frames per call, the last padded only to a multiple of 4)
    against one padded batch through the full form."""
    model = small_encoder(mixer)
    model.set_direction("chunk-bi", chunk_frames)
    lengths = [1, 7, 13, 30, 64, 97, 130, 258]  # shorter than a chunk, not multiples of 4, several chunks
    x = feats(len(lengths), max(lengths), chunk_frames)
    worst = 0.0
    with torch.no_grad():
        _, out_lens, full = model(x, torch.tensor(lengths))
        for b, T in enumerate(lengths):
            got, _ = stream(model, x[b:b + 1, :T], chunk_frames)
            n = int(out_lens[b])
            assert got.shape[1] == n == (T + 3) // 4
            worst = max(worst, (got[0] - full[b, :n]).abs().max().item())
    print(f"{mixer} chunk-bi@{chunk_frames}: max abs error step vs full = {worst:.2e}")
    assert worst <= 1e-5


# --- modes ---------------------------------------------------------------------------------------------------------
def test_parse_mode():
    assert parse_mode("chunk-bi:640ms") == ("chunk-bi", 64)
    assert parse_mode("chunk-bi:160ms") == ("chunk-bi", 16)
    assert parse_mode("chunk-bi:640ms", frame_shift_ms=20) == ("chunk-bi", 32)
    assert parse_mode(" l2r ") == ("l2r", None) and parse_mode("alt") == ("alt", None)
    assert parse_mode("chunk-bi") == ("chunk-bi", None)
    for bad, needle in (("chunk-bi:30ms", "multiple of 4"), ("chunk-bi:645ms", "whole number"),
                        ("chunk-bi:64", "milliseconds"), ("chunk-bi:0ms", "positive"), ("sideways", "unknown"),
                        ("l2r:640ms", "unknown")):
        with pytest.raises(ValueError, match=needle) as e:
            parse_mode(bad)
        assert "\n" not in str(e.value)


def test_set_direction_errors_and_round_trip():
    model = small_encoder("rwkv")
    for args, needle in ((("chunk-bi",), "needs a chunk size"), (("chunk-bi", 30), "multiple of 4"),
                         (("chunk-bi", 0), "positive multiple"), (("chunk-bi", -8), "positive multiple"),
                         (("chunk-bi:320ms", 64), "two chunk sizes")):
        with pytest.raises(ValueError, match=needle):
            model.set_direction(*args)
    model.set_direction("chunk-bi:640ms")
    assert (model.direction, model.chunk_frames) == ("chunk-bi", 64)
    model.set_direction("l2r")
    model.set_direction(model.direction)
    model.set_direction("chunk-bi")  # the chunk is remembered
    assert model.chunk_frames == 64
    for mixer in ("mha", "none", "deformable"):
        with pytest.raises(ValueError, match="bidirectional"):
            small_encoder(mixer).set_direction("chunk-bi", 64)


# --- training plan -------------------------------------------------------------------------------------------------
def test_old_configs_load_and_plans_without_chunk_bi_are_unchanged():
    cfg = EncoderConfig.from_dict({"mixer": "rwkv", "dirdrop": "both", "dirdrop_p": 0.5, "n_layers": 6})
    assert cfg.chunk_bi_p == 0.0 and cfg.chunk_bi_ms == [160, 320, 640, 1280]
    model = Encoder(cfg).train()
    from edgeasr.models.dirdrop import training_directions
    rng = random.Random(0)
    for _ in range(20):
        assert model._plan() == (training_directions(6, "both", 0.5, rng), None, 0)
    for bad in ({"chunk_bi_p": 1.5}, {"chunk_bi_p": 0.5, "chunk_bi_ms": []}, {"chunk_bi_p": 0.5, "chunk_bi_ms": [0]}):
        with pytest.raises(ValueError, match="chunk_bi"):
            EncoderConfig(mixer="rwkv", **bad)


def test_chunk_bi_training_plan_keeps_dirdrop():
    assert chunked(["bi", "l2r", "r2l"]) == ["chunk-bi", "l2r", "chunk-r2l"]
    rng = random.Random(1)
    draws = [draw_chunk_bi(0.5, [160, 320, 640, 1280], 10.0, rng) for _ in range(400)]
    assert set(draws) == {None, 4, 8, 16, 32} and 120 < draws.count(None) < 280
    assert draw_chunk_bi(0.0, [160], 10.0, rng) is None

    torch.manual_seed(0)
    cfg = EncoderConfig(mixer="mamba2", mixer_options={"headdim": 16, "d_state": 16}, d_model=32, n_layers=4,
                        conv_kernel=5, dirdrop="both", dirdrop_p=0.5, chunk_bi_p=1.0, chunk_bi_ms=[80])
    model = Encoder(cfg).train()
    seen = set()
    for _ in range(10):
        plan, chunk, lookahead = model._plan()
        assert chunk == 2 and lookahead == 0 and set(plan) <= {"chunk-bi", "l2r", "chunk-r2l"}
        seen |= set(plan)
    assert seen == {"chunk-bi", "l2r", "chunk-r2l"}
    x, lens = feats(2, 40, 0), torch.tensor([40, 23])
    lp, _, _ = model(x, lens)
    lp.sum().backward()  # a training step through chunk-bi reaches both directions' weights
    for core in ("l2r", "r2l"):
        assert getattr(model.layers[0].mixer, core).out_proj.weight.grad is not None


def test_train_cli_passes_the_chunk_bi_options(monkeypatch, tmp_path):
    seen = {}

    def fake_train(run_dir, model_cfg, tc, *a, **kw):
        seen["cfg"] = model_cfg
        return {"steps": 0}

    import edgeasr.training.train as train_mod
    monkeypatch.setattr(train_mod, "train", fake_train)
    m = tmp_path / "m.jsonl"
    m.write_text("")
    base = ["train", "--mixer", "rwkv", "--train", str(m), "--dev", str(m), "--out", str(tmp_path / "run")]
    res = CliRunner().invoke(main, base + ["--chunk-bi-p", "0.7", "--chunk-bi-ms", "160,640"])
    assert res.exit_code == 0, res.output
    assert seen["cfg"].chunk_bi_p == 0.7 and seen["cfg"].chunk_bi_ms == [160, 640]
    res = CliRunner().invoke(main, base + ["--chunk-bi-ms", "160,x"])
    assert res.exit_code == 2 and "milliseconds" in res.output
    res = CliRunner().invoke(main, base + ["--chunk-bi-p", "2"])
    assert res.exit_code != 0 and "chunk_bi_p" in res.output and "Traceback" not in res.output


# --- ONNX ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rwkv_ckpt(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "rwkv", "rwkv")


def test_chunk_bi_step_and_full_graphs_on_ort(rwkv_ckpt, tmp_path):
    cf = 32
    step_path, full_path = tmp_path / "step.onnx", tmp_path / "full.onnx"
    res = CliRunner().invoke(main, ["export", str(rwkv_ckpt), "--kind", "step", "--direction", "chunk-bi",
                                    "--chunk-frames", str(cf), "--out", str(step_path), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["max_abs_error"] <= 1e-4
    model, config = load_checkpoint(rwkv_ckpt)
    r = export(model, config, full_path, "full", "chunk-bi", cf)
    assert r.verify.max_error <= 1e-4
    for p, kind in ((step_path, "step"), (full_path, "full")):
        meta = read_metadata(p)
        assert (meta["graph_kind"], meta["direction"], meta["chunk_frames"]) == (kind, "chunk-bi", cf)
        errors = [pr for pr in lint_model(p) if pr.severity == "error"]
        assert not errors, errors  # TensorRT-ready as the other modes' graphs

    model.set_direction("chunk-bi", cf)
    step_sess, full_sess = session(step_path.read_bytes()), session(full_path.read_bytes())
    worst_full = worst_torch = 0.0
    for T in (10, 93, 160):  # under one chunk, a partial last chunk (padded to 96 only), whole chunks
        x = feats(1, T, T).numpy()
        lp_step, _, _ = stream_onnx(step_sess, x, cf, model.state_specs())
        lp_full, out_lens = full_sess.run(["logprobs", "out_lens"], {"x": x, "x_lens": np.array([T])})
        with torch.no_grad():
            lp_torch = model(torch.from_numpy(x), torch.tensor([T]))[0].numpy()
        n = int(out_lens[0])
        assert lp_step.shape[1] == n == (T + 3) // 4
        worst_full = max(worst_full, float(np.abs(lp_step - lp_full[:, :n]).max()))
        worst_torch = max(worst_torch, float(np.abs(lp_step - lp_torch[:, :n]).max()))
    print(f"chunk-bi@{cf} ORT step vs ORT full {worst_full:.2e}, vs torch full {worst_torch:.2e}")
    assert worst_full <= 1e-4 and worst_torch <= 1e-4


def test_chunk_bi_export_errors_are_one_line(rwkv_ckpt, tmp_path):
    mha = save_tiny(tmp_path / "mha", "mha")
    out = str(tmp_path / "x.onnx")
    cases = (
        ([str(rwkv_ckpt), "--kind", "step", "--direction", "chunk-bi", "--chunk-frames", "30"], "multiple of 4"),
        ([str(mha), "--kind", "step", "--direction", "chunk-bi", "--chunk-frames", "32"], "bidirectional"),
        ([str(rwkv_ckpt), "--kind", "chunk", "--direction", "chunk-bi"], "step or full"),
    )
    for args, needle in cases:
        res = CliRunner().invoke(main, ["export", *args, "--out", out])
        lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.output
        assert needle in lines[0] and "Traceback" not in res.output
    model, config = load_checkpoint(rwkv_ckpt)
    with pytest.raises(ExportError, match="cannot stream"):
        export(model, config, tmp_path / "y.onnx", "step", "alt", 32)
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()


def test_shipped_default_loads_unchanged_and_streams_chunk_bi():
    from edgeasr.pretrained import load_model

    model, _ = load_model("default")  # a config written before chunk-bi existed loads as it is
    model.set_direction("chunk-bi:640ms")
    assert model.chunk_frames == 64
    x = feats(1, 250, 5) * 0.5 - 5  # roughly log-mel range
    with torch.no_grad():
        full = model(x, torch.tensor([250]))[2]
        got, _ = stream(model, x, 64)
    assert (got - full).abs().max().item() <= 1e-4  # trained weights: larger states than the small models


def test_training_steps_in_chunk_bi_through_the_cli(corpus, tmp_path):
    run_dir = tmp_path / "run"
    res = CliRunner().invoke(main, [
        "train", "--mixer", "rwkv", "--train", str(corpus / "train.jsonl"), "--dev", str(corpus / "dev.jsonl"),
        "--out", str(run_dir), "--max-steps", "2", "--dirdrop", "both", "--dirdrop-p", "0.5", "--chunk-bi-p", "1",
        "--chunk-bi-ms", "160,640", "--d-model", "32", "--layers", "2", "--batch-frames", "4000", "--threads", "1"])
    assert res.exit_code == 0, res.output
    model = json.loads((run_dir / "config.json").read_text())["model"]
    assert model["chunk_bi_p"] == 1.0 and model["chunk_bi_ms"] == [160, 640]
    net, _ = load_checkpoint(run_dir)
    net.set_direction("chunk-bi:160ms")  # and the result streams in the mode it trained in
    x = feats(1, 37, 2)
    with torch.no_grad():
        full = net(x, torch.tensor([37]))[2]
        got, _ = stream(net, x, 16)
    assert (got - full).abs().max().item() <= 1e-5
