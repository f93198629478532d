"""ONNX export (issue 3): every mixer x graph kind exports, verifies on ONNX Runtime, streams on ORT and OpenVINO
(f32) like the full graph, carries the metadata contract, is byte-deterministic, and fails cleanly on bad input.
Tiny random-init encoders (d_model=32, 2 layers) saved as real checkpoints."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from edgeasr.exporters import graph_clean
from edgeasr.exporters.onnx_export import ExportError, export
from edgeasr.runtimes.files import sha256_file
from edgeasr.exporters.verify import session, stream_onnx
from edgeasr.models.checkpoint import load_checkpoint, save_checkpoint
from edgeasr.models.mixers import mixer_names
from edgeasr.runtimes.features import FbankOptions
from edgeasr.runtimes.metadata import read_metadata
from edgeasr.runtimes.vocab import BLANK_ID, VOCAB
from test_encoder import small_encoder
from edgeasr.cli import main

MIXERS = mixer_names()
KINDS = ("full", "step", "chunk")
TOL = 1e-4
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def save_tiny(run_dir: Path, mixer: str, **kw) -> Path:
    save_checkpoint(run_dir, small_encoder(mixer, **kw),
                    {"features": FbankOptions().to_dict(), "vocab": list(VOCAB), "blank_id": BLANK_ID})
    return run_dir


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {m: save_tiny(root / m, m) for m in MIXERS}


_EXPORTS: dict = {}


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory):
    """(mixer, kind) -> ExportResult, exported once per module with verification on."""
    root = tmp_path_factory.mktemp("onnx")

    def get(mixer: str, kind: str):
        key = (mixer, kind)
        if key not in _EXPORTS:
            torch.set_num_threads(1)
            model, config = load_checkpoint(checkpoints[mixer])
            _EXPORTS[key] = export(model, config, root / f"{mixer}_{kind}.onnx", kind, "l2r",
                                   source_sha256=sha256_file(checkpoints[mixer] / "model.safetensors"))
        return _EXPORTS[key]

    return get


_SESSIONS: dict = {}


def sess(path: Path):
    if str(path) not in _SESSIONS:
        _SESSIONS[str(path)] = session(Path(path).read_bytes())
    return _SESSIONS[str(path)]


def feats(B: int, T: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    return (g.standard_normal((B, T, 80)) * 3 + 5).astype(np.float32)


def full_logprobs(path, x):
    lens = np.full((x.shape[0],), x.shape[1], np.int64)
    return sess(path).run(["logprobs"], {"x": x, "x_lens": lens})[0]


def specs_of(path):
    """StateSpec-like objects rebuilt from metadata alone (what a client has)."""
    from edgeasr.models.state import StateSpec

    return [StateSpec(s["name"], tuple(s["shape"]), torch.float32, s["init"]) for s in read_metadata(path)["states"]]


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mixer", MIXERS)
def test_export_verified_with_metadata(exported, mixer, kind):
    r = exported(mixer, kind)
    assert r.path.is_file() and r.verify is not None
    print(f"{mixer:10s} {kind:5s} ORT err {r.verify.max_error:.2e}  {r.size_bytes} B  {r.op_count} ops  "
          f"{r.seconds:.1f} s")
    assert r.verify.max_error <= TOL
    assert any(n.startswith("real[") for n, _ in r.verify.rows), "verification must include real speech"
    meta = read_metadata(r.path)
    assert meta["graph_kind"] == kind and meta["mixer"] == mixer and meta["opset"] == 17
    assert meta["vocab"] == list(VOCAB) and meta["blank_id"] == BLANK_ID
    assert meta["fbank"] == FbankOptions().to_dict() and meta["subsampling"] == 4 and meta["chunk_multiple"] == 4
    assert meta["chunk_frames"] == 32 and meta["lookahead_frames"] == 0 and meta["precision"] == "fp32"
    assert len(meta["source_sha256"]) == 64
    model = onnx.load(str(r.path))
    assert [i.name for i in model.graph.input] == meta["inputs"]
    assert [o.name for o in model.graph.output] == meta["outputs"]
    if kind == "step":
        names = [s["name"] for s in meta["states"]]
        assert meta["inputs"] == ["x"] + [f"in.{n}" for n in names]
        assert meta["outputs"] == ["logprobs", "encoder_out"] + [f"out.{n}" for n in names]
        enc = small_encoder(mixer)
        assert [(s.name, list(s.shape), s.init) for s in enc.state_specs()] == \
               [(s["name"], s["shape"], s["init"]) for s in meta["states"]]
        for i, o, spec in zip(model.graph.input[1:], model.graph.output[2:], meta["states"]):  # batch-first, fixed
            for v in (i, o):
                dims = v.type.tensor_type.shape.dim
                assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == spec["shape"], v.name
    else:
        assert meta["states"] == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mixer", MIXERS)
def test_no_forbidden_ops(exported, mixer, kind):
    model = onnx.load(str(exported(mixer, kind).path))
    assert graph_clean.forbidden(model, "step") == []  # step rules (no CumSum) hold for every kind here
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"CumSum", "GroupNormalization", "DeformConv", "Loop", "Scan", "If"}, ops


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(mixer=st.sampled_from(MIXERS), enc_frames=st.integers(1, 16), batch=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_property_step_stream_equals_full_graph_on_ort(exported, mixer, enc_frames, batch, seed):
    step, full = exported(mixer, "step").path, exported(mixer, "full").path
    x = feats(batch, 4 * 27 + 2, seed)
    lp, _, _ = stream_onnx(sess(step), x, 4 * enc_frames, specs_of(step))
    ref = full_logprobs(full, x)
    assert np.abs(lp[:, :ref.shape[1]] - ref).max() <= TOL


@pytest.mark.parametrize("mixer", MIXERS)
def test_10000_fbank_frame_stream_has_no_drift(exported, mixer):
    """2,500 encoder frames streamed in 320 ms chunks through the step graph == the full graph, start to end."""
    step, full = exported(mixer, "step").path, exported(mixer, "full").path
    x = feats(1, 10_000, 7)
    lp, _, _ = stream_onnx(sess(step), x, 32, specs_of(step))
    ref = full_logprobs(full, x)
    err = np.abs(lp - ref).max(axis=(0, 2))
    print(f"{mixer}: max abs error first 100 frames {err[:100].max():.2e}, last 100 frames {err[-100:].max():.2e}")
    assert lp.shape == ref.shape == (1, 2500, len(VOCAB))
    assert err.max() <= TOL


@pytest.mark.parametrize("mixer", MIXERS)
def test_step_graph_on_openvino_f32(exported, mixer):
    ov = pytest.importorskip("openvino")
    step, full = exported(mixer, "step").path, exported(mixer, "full").path
    core = ov.Core()
    compiled = core.compile_model(str(step), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    specs = specs_of(step)
    x = feats(2, 4 * 25, 3)
    state = {f"in.{s.name}": np.full((2, *s.shape), s.init, np.float32) for s in specs}
    lps = []
    for s in range(0, x.shape[1], 12):
        res = compiled({"x": x[:, s:s + 12], **state})
        out = {k.get_any_name(): v for k, v in res.items()}
        lps.append(out["logprobs"])
        state = {f"in.{sp.name}": out[f"out.{sp.name}"] for sp in specs}
    lp = np.concatenate(lps, 1)
    ref = full_logprobs(full, x)
    err = float(np.abs(lp - ref).max())
    print(f"{mixer}: OpenVINO f32 step stream vs ORT full: {err:.2e}")
    assert err <= TOL


def test_reexport_is_byte_identical(checkpoints, tmp_path):
    for mixer, kind in (("rwkv", "step"), ("mamba2", "full"), ("deformable", "chunk")):
        files = []
        for i in range(2):
            model, config = load_checkpoint(checkpoints[mixer])
            files.append(export(model, config, tmp_path / f"{mixer}{i}.onnx", kind, verify=False,
                                source_sha256="0" * 64).path.read_bytes())
        assert files[0] == files[1], (mixer, kind)


def test_bi_and_alt_step_export_refused(checkpoints, tmp_path):
    model, config = load_checkpoint(checkpoints["rwkv"])
    for d in ("bi", "alt"):
        with pytest.raises(ExportError, match="cannot stream"):
            export(model, config, tmp_path / "x.onnx", "step", d)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("direction", ["bi", "alt"])
def test_bidirectional_full_and_chunk_export(checkpoints, tmp_path, direction):
    model, config = load_checkpoint(checkpoints["mamba2"])
    for kind in ("full", "chunk"):
        r = export(model, config, tmp_path / f"{kind}.onnx", kind, direction)
        assert r.verify.max_error <= TOL and read_metadata(r.path)["direction"] == direction


def test_l2r_export_of_model_without_dirdrop_warns(tmp_path):
    run = save_tiny(tmp_path / "ck", "rwkv", dirdrop="none")
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["direction"] = "bi"
    (run / "config.json").write_text(json.dumps(cfg))
    model, config = load_checkpoint(run)
    r = export(model, config, tmp_path / "s.onnx", "step", verify=False)
    assert any("DirDrop" in w for w in r.warnings)
    run2 = save_tiny(tmp_path / "ck2", "rwkv", dirdrop="both", dirdrop_p=0.2)
    model, config = load_checkpoint(run2)
    assert export(model, config, tmp_path / "s2.onnx", "step", verify=False).warnings == []


def test_failed_verification_aborts_and_writes_nothing(checkpoints, tmp_path):
    model, config = load_checkpoint(checkpoints["rwkv"])
    with pytest.raises(ExportError, match="verification failed.*worst tensors"):
        export(model, config, tmp_path / "x.onnx", "step", tolerance=0.0 - 1.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", KINDS)
def test_inspect_json_every_kind(exported, kind):
    r = exported("mha", kind)
    res = CliRunner().invoke(main, ["inspect", str(r.path), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["graph_kind"] == kind and info["opset"] == {"ai.onnx": 17}
    assert info["size_bytes"] == r.path.stat().st_size and sum(info["op_histogram"].values()) == info["op_count"]
    assert info["inputs"][0] == {"name": "x", "dtype": "float32", "shape": ["batch", "frames", 80]}
    assert info["metadata"]["vocab"] == list(VOCAB)
    if kind == "step":
        assert {s["name"] for s in info["metadata"]["states"]} >= {"layers.0.mixer.k", "layers.0.mixer.valid"}
    text = CliRunner().invoke(main, ["inspect", str(r.path)])
    assert text.exit_code == 0 and "op histogram" in text.output and "frames" in text.output


def test_cli_export_writes_verified_file(checkpoints, tmp_path):
    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(main, ["export", str(checkpoints["none"]), "--kind", "step", "--out", str(out),
                                    "--chunk-frames", "16", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["verified"] and summary["max_abs_error"] <= TOL
    assert read_metadata(out)["chunk_frames"] == 16
    assert read_metadata(out)["source_sha256"] == sha256_file(checkpoints["none"] / "model.safetensors")


def _cli_error(args, tmp_path):
    before = set(tmp_path.rglob("*"))
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert set(tmp_path.rglob("*")) == before, "an error must leave no file behind"
    return lines[0]


def test_cli_errors_are_one_line_and_leave_no_file(checkpoints, tmp_path):
    good = str(checkpoints["mha"])
    out = str(tmp_path / "out.onnx")
    corrupt = save_tiny(tmp_path / "corrupt", "mha")
    (corrupt / "model.safetensors").write_bytes(b"not safetensors at all")
    mismatch = save_tiny(tmp_path / "mismatch", "mha")
    cfg = json.loads((mismatch / "config.json").read_text())
    cfg["model"]["d_model"] = 64
    (mismatch / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "plain.txt").write_text("x")
    foreign = tmp_path / "foreign.onnx"
    node = onnx.helper.make_node("Relu", ["a"], ["b"])
    g = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("a", 1, [1])],
                               [onnx.helper.make_tensor_value_info("b", 1, [1])])
    onnx.save(onnx.helper.make_model(g), str(foreign))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00garbage" * 10)
    cases = {
        "missing checkpoint": (["export", str(tmp_path / "nope"), "--kind", "full", "--out", out], "nope"),
        "corrupt weights": (["export", str(corrupt), "--kind", "full", "--out", out], "safetensors"),
        "config mismatch": (["export", str(mismatch), "--kind", "full", "--out", out], "do not match"),
        "missing out dir": (["export", good, "--kind", "full", "--out", str(tmp_path / "no" / "x.onnx")],
                            "does not exist"),
        "out under a file": (["export", good, "--kind", "full", "--out", str(tmp_path / "plain.txt" / "x.onnx")],
                             "does not exist"),
        "out is a dir": (["export", good, "--kind", "full", "--out", str(tmp_path)], "directory"),
        "opset": (["export", good, "--kind", "full", "--out", out, "--opset", "13"], "unsupported opset"),
        "bi step": (["export", good, "--kind", "step", "--direction", "bi", "--out", out], "cannot stream"),
        "alt on mha": (["export", good, "--kind", "full", "--direction", "alt", "--out", out], "bidirectional"),
        "chunk frames": (["export", good, "--kind", "step", "--chunk-frames", "30", "--out", out], "multiple of 4"),
        "inspect foreign": (["inspect", str(foreign)], "no edgeasr metadata"),
        "inspect garbage": (["inspect", str(garbage)], "not a readable ONNX"),
        "inspect missing": (["inspect", str(tmp_path / "missing.onnx")], "no such file"),
    }
    for name, (args, needle) in cases.items():
        line = _cli_error(args, tmp_path)
        assert line.startswith("error:") and needle in line, (name, line)


def test_metadata_reader_does_not_import_torch():
    code = "import sys, edgeasr.runtimes.metadata; assert 'torch' not in sys.modules, 'torch imported'"
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})


def test_input_floor_travels_into_full_and_step_graphs(tmp_path):
    """A model with an input floor exports (verified against torch, streaming included) and its graphs see digital
    silence as the floor noise, like the torch model."""
    from edgeasr.models.conformer import Encoder

    model = small_encoder("rwkv", input_floor_dbfs=-80.0)
    with torch.no_grad():
        model.feat_floor.uniform_(-8.0, -4.0)
    save_checkpoint(tmp_path / "ckpt", model,
                    {"features": FbankOptions().to_dict(), "vocab": list(VOCAB), "blank_id": BLANK_ID})
    loaded, config = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(loaded, Encoder) and torch.equal(loaded.feat_floor, model.feat_floor)
    silence = np.full((1, 32, 80), -23.03, np.float32)
    deeper = np.full((1, 32, 80), -60.0, np.float32)  # a different digital silence; without a floor far apart
    for kind in ("full", "step"):
        r = export(loaded, config, tmp_path / f"{kind}.onnx", kind, "l2r", source_sha256="0" * 64)
        assert r.verify.max_error <= TOL
        if kind == "full":
            a, b = full_logprobs(r.path, silence), full_logprobs(r.path, deeper)
            assert np.abs(a - b).max() < 1e-4
