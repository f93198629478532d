"""int8 (issue 5): the QDQ recipe (symmetric int8, zero points 0, per-channel weights), node selection (states,
recurrence, low-rank, decay, CTC stay fp32), TensorRT lint, streaming-state calibration, ORT and OpenVINO int8
streaming close to fp32, metadata, and one-line refusals with no partial file. Tiny random-init encoders and real
speech (pocketsphinx LibriVox clips)."""
import glob
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

from edgeasr.calibration import data as cdata, quantize as cq, sensitivity as sens
from edgeasr.calibration.int8 import quantize_model
from edgeasr.exporters.onnx_export import export
from edgeasr.exporters.trt_lint import lint_model
from edgeasr.models.checkpoint import load_checkpoint
from edgeasr.runtimes.errors import UserError
from edgeasr.runtimes.metadata import read_metadata
from test_export import save_tiny
from edgeasr.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
WAVS = sorted(glob.glob("/usr/share/pocketsphinx/test/data/librivox/*.wav"))
needs_audio = pytest.mark.skipif(len(WAVS) < 3, reason="pocketsphinx-testdata LibriVox clips not installed")


def manifest(path: Path, wavs, text="a test sentence") -> Path:
    path.write_text("".join(json.dumps({"audio_filepath": w, "text": text, "duration": 1.0}) + "\n" for w in wavs))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """mixer -> {kind: fp32 path}; rwkv step+full, mamba2 step (tiny, exported once)."""
    root = tmp_path_factory.mktemp("q")
    out = {}
    torch.set_num_threads(1)
    for mixer, kinds in (("rwkv", ("step", "full")), ("mamba2", ("step",))):
        model, config = load_checkpoint(save_tiny(root / f"ck_{mixer}", mixer))
        out[mixer] = {k: export(model, config, root / f"{mixer}_{k}.onnx", k, "l2r", verify=False).path
                      for k in kinds}
    return out


_Q: dict = {}


@pytest.fixture(scope="module")
def quantized(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("q8")

    def get(mixer, kind="step"):
        if (mixer, kind) not in _Q:
            out = root / f"{mixer}_{kind}.int8.onnx"
            rep = quantize_model(models[mixer][kind], WAVS, out, max_utterances=3, max_samples=40)
            _Q[(mixer, kind)] = (out, rep)
        return _Q[(mixer, kind)]

    return get


def _qdq(model):
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [(n, inits) for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


@needs_audio
@pytest.mark.parametrize("method", ["percentile", "entropy"])
@pytest.mark.parametrize("kind", ["step", "full"])
def test_histogram_methods_calibrate_both_graph_kinds(models, tmp_path, method, kind):
    """ORT's histogram collectors stack all samples; ours differ in T (full graphs; a step graph's tail chunk),
    which used to crash them (ValueError: inhomogeneous shape)."""
    import onnxruntime as ort

    out = tmp_path / f"{kind}.int8.onnx"
    rep = quantize_model(models["rwkv"][kind], WAVS, out, method=method, max_utterances=4, max_samples=40)
    assert rep["nodes_quantized"] > 10 and read_metadata(out)["precision"] == "int8"
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)
    for name, arr in _qdq(onnx.load(str(out)))[0][1].items():
        assert np.all(np.isfinite(arr.astype(np.float64)))  # no NaN/inf scale from an empty or degenerate histogram
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    if kind == "step":  # every sample of a histogram calibration has the whole chunk, the tail padded
        r = cdata.StreamingCalibrationReader(models["rwkv"]["step"], WAVS[:2], same_shape=True)
        assert {x["x"].shape for x in iter(r.get_next, None)} == {(1, r.chunk_frames, 80)}


# --- recipe ------------------------------------------------------------------------------------------------------
@needs_audio
@pytest.mark.parametrize("mixer", ["rwkv", "mamba2"])
def test_zero_points_int8_and_per_channel_weights(quantized, mixer):
    path, rep = quantized(mixer)
    m = onnx.load(str(path))
    qdq = _qdq(m)
    assert qdq
    per_channel = 0
    for n, inits in qdq:
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), n.name
        scale = inits[n.input[1]]
        assert scale.dtype == np.float32 and (scale > 0).all()
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:  # a weight
            assert inits[n.input[0]].dtype == np.int8
            axis = next(a.i for a in n.attribute if a.name == "axis")
            assert scale.ndim == 1 and scale.size == inits[n.input[0]].shape[axis] > 1
            per_channel += 1
    assert per_channel == rep["nodes_quantized"]  # every quantized node has per-channel int8 weights


@needs_audio
@pytest.mark.parametrize("mixer", ["rwkv", "mamba2"])
def test_states_untouched_and_excluded_nodes_fp32(quantized, models, mixer):
    path, rep = quantized(mixer)
    m = onnx.load(str(path))
    boundary = {v.name for v in m.graph.input} | {v.name for v in m.graph.output}
    for n, _ in _qdq(m):
        assert not (set(n.input) | set(n.output)) & boundary, f"Q/DQ touches graph I/O: {n.name}"
    prod = {o: n for n in m.graph.node for o in n.output}
    q_nodes = {n.name for n in m.graph.node if n.op_type in ("MatMul", "Conv", "Gemm")
               and any(prod.get(i) is not None and prod[i].op_type == "DequantizeLinear" for i in n.input)}
    assert q_nodes == {r["node"] for r in rep["nodes"] if r["precision"] == "int8"}
    for r in rep["nodes"]:
        low = (r["node"] + r["weight"]).lower()
        if any(t in low for t in ("ctc", "lora", "maa", "decay")):
            assert r["precision"] == "fp32", r
    assert any("ctc" in r["node"] and r["precision"] == "fp32" for r in rep["nodes"])
    if mixer == "rwkv":
        assert any("decay" in r["weight"] and r["precision"] == "fp32" for r in rep["nodes"])
        # the token-shift (ddlerp) low-rank weights: named parameters, or, in the step form, re-laid per branch
        # (folded constants of rank 3-4 with generated names): fp32 either way
        ddlerp = [r for r in rep["nodes"] if r["op"] == "MatMul" and ("maa" in r["weight"] or len(r["shape"]) > 2)]
        assert ddlerp and all(r["precision"] == "fp32" for r in ddlerp)
    # the recurrence (products without a constant weight) is never a candidate and stays float MatMul
    fp32 = onnx.load(str(models[mixer]["step"]))
    inits = {t.name for t in fp32.graph.initializer}
    act_act = [n.name for n in fp32.graph.node if n.op_type == "MatMul" and not set(n.input) & inits]
    assert act_act and not set(act_act) & q_nodes


@needs_audio
def test_lint_trt_passes_and_metadata(quantized):
    path, rep = quantized("rwkv")
    errors = [p for p in lint_model(path) if p.severity == "error"]
    assert errors == []
    meta = read_metadata(path)
    assert meta["precision"] == "int8"
    r = json.loads(meta["quant_recipe"])
    assert r["scheme"] == "S8S8" and r["symmetric"] and r["per_channel"] and r["format"] == "QDQ"
    # 40 requested samples are cut to whole MinMax strides (32)
    assert r["method"] == "minmax" and r["calibration"]["samples"] == 32 and r["calibration"]["streaming_states"]
    assert r["nodes_quantized"] == rep["nodes_quantized"] and len(r["quantized"]) == r["nodes_quantized"]
    assert meta["states"] == read_metadata(path)["states"] and meta["graph_kind"] == "step"
    res = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["metadata"]["precision"] == "int8"


# --- calibration -------------------------------------------------------------------------------------------------
@needs_audio
def test_calibration_samples_carry_real_states(models):
    r = cdata.StreamingCalibrationReader(models["rwkv"]["step"], WAVS[:2], max_samples=10)
    samples = list(iter(r.get_next, None))
    assert len(samples) == 10 and r.stats["utterances"] == 1
    state_names = [k for k in samples[0] if k.startswith("in.")]
    assert state_names and all(not samples[0][k].any() for k in state_names)  # utterance start: initial state
    for s in samples[1:]:
        assert any(s[k].any() for k in state_names)  # then the state the fp32 model carried
        assert s["x"].shape == (1, 32, 80)
    assert r.stats["samples_with_nonzero_state"] == 9
    # the state fed to chunk 2 is exactly what the fp32 model produced on chunk 1
    import onnxruntime as ort

    sess = ort.InferenceSession(str(models["rwkv"]["step"]), providers=["CPUExecutionProvider"])
    outs = sess.run([k.replace("in.", "out.") for k in state_names], samples[0])
    for k, v in zip(state_names, outs):
        np.testing.assert_array_equal(samples[1][k], v)
    r.rewind()
    again = r.get_next()
    np.testing.assert_array_equal(again["x"], samples[0]["x"])


@needs_audio
def test_full_graph_calibrates_on_utterances(models, tmp_path):
    r = cdata.StreamingCalibrationReader(models["rwkv"]["full"], WAVS[:3])
    s = list(iter(r.get_next, None))
    assert len(s) == 3 and all(set(x) == {"x", "x_lens"} for x in s)
    out = tmp_path / "full.int8.onnx"
    rep = quantize_model(models["rwkv"]["full"], WAVS[:4], out)
    assert read_metadata(out)["precision"] == "int8" and rep["nodes_quantized"] > 10


# --- backends ----------------------------------------------------------------------------------------------------
def _stream_logprobs(backend_name, path, wav):
    from edgeasr.runtimes.audio import load_audio
    from edgeasr.runtimes.backends import get_backend
    from edgeasr.runtimes.session import StreamingSession

    b = get_backend(backend_name, path, threads=1)  # OpenVINO: stateful, static shapes (int8 as fp32)
    s = StreamingSession(b, keep_logprobs=True)
    samples, _ = load_audio(wav)
    for i in range(0, len(samples), 4000):
        s.accept_waveform(samples[i:i + 4000])
    s.flush()
    lp = s.stream_logprobs(s.stream)
    b.deactivate()
    return lp


def _cos(a, b):
    a, b = a.ravel(), b.ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@needs_audio
@pytest.mark.parametrize("backend", ["ort", "openvino"])
def test_int8_streams_close_to_fp32(quantized, models, backend):
    from edgeasr.runtimes.backends import available

    ok, why = available(backend)
    if not ok:
        pytest.skip(why)
    path, _ = quantized("rwkv")
    ref = _stream_logprobs("ort", models["rwkv"]["step"], WAVS[3])
    got = _stream_logprobs(backend, path, WAVS[3])
    assert got.shape == ref.shape and np.isfinite(got).all()
    cos = _cos(got, ref)
    print(f"{backend}: cosine(int8, fp32 logprobs) = {cos:.5f}")
    assert cos > 0.99


def _ort_optimized_ops(path, tmp_path) -> list[str]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]


@needs_audio
def test_int8_kernels_really_run(quantized, tmp_path):
    """ORT fuses every quantized MatMul (DQ(x), DQ(w) -> MatMul: no Q/DQ on its fp32 output) into
    MatMulIntegerToFloat; OpenVINO compiles int8 FullyConnected."""
    path, rep = quantized("rwkv")
    m = onnx.load(str(path))
    prod = {o: n for n in m.graph.node for o in n.output}
    for n in m.graph.node:  # a MatMul's output feeds fp32 ops directly: an output Q/DQ pair would only cost
        if n.op_type == "QuantizeLinear" and n.input[0] in prod:
            assert prod[n.input[0]].op_type != "MatMul", n.name
    ops = _ort_optimized_ops(path, tmp_path)
    n_mm = sum(1 for r in rep["nodes"] if r["precision"] == "int8" and r["op"] == "MatMul")
    assert ops.count("MatMulIntegerToFloat") == n_mm, sorted(set(ops))
    int8_ops = [o for o in ops if o in ("QLinearMatMul", "QLinearConv", "MatMulIntegerToFloat")]
    assert len(int8_ops) >= rep["nodes_quantized"] - 1, sorted(set(ops))  # all but the first subsampling conv
    try:
        import openvino as ov
    except ImportError:
        pytest.skip("openvino not installed")
    c = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1"})
    i8 = [op for op in c.get_runtime_model().get_ordered_ops()
          if op.get_rt_info()["layerType"].astype(str) in ("FullyConnected", "Convolution", "MatMul")
          and op.get_rt_info()["runtimePrecision"].astype(str) in ("i8", "u8")]
    assert len(i8) >= rep["nodes_quantized"] // 2


@needs_audio
def test_dynamic_format_cpu_only_int8(models, tmp_path):
    """--format dynamic: int8 weights with activations quantized per call (ORT DynamicQuantizeMatMul), the same
    node rule minus the Conv, the format in the recipe, and streaming close to fp32."""
    out = tmp_path / "dyn.int8.onnx"
    res = CliRunner().invoke(main, ["quantize", str(models["rwkv"]["step"]), "--calib",
                                    str(manifest(tmp_path / "c.jsonl", WAVS[:3])), "--out", str(out),
                                    "--format", "dynamic", "--max-samples", "40", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output[res.output.index("{"):])
    assert rep["format"] == "dynamic" and rep["nodes_quantized"] > 0
    assert all(r["precision"] == "fp32" for r in rep["nodes"] if r["op"] == "Conv")
    meta = read_metadata(out)
    assert meta["precision"] == "int8" and json.loads(meta["quant_recipe"])["format"] == "dynamic"
    ops = _ort_optimized_ops(out, tmp_path)
    assert ops.count("DynamicQuantizeMatMul") + ops.count("MatMulInteger") >= rep["nodes_quantized"]
    assert "QuantizeLinear" not in ops
    assert _cos(_stream_logprobs("ort", out, WAVS[3]), _stream_logprobs("ort", models["rwkv"]["step"], WAVS[3])) \
        > 0.99


# --- accuracy-aware ---------------------------------------------------------------------------------------------
def test_greedy_fallback_order_and_budget():
    cands = ["a", "b", "c", "d"]
    sq = {"a": {"sqnr_db": 40}, "b": {"sqnr_db": 10}, "c": {"sqnr_db": 30}, "d": {"sqnr_db": 20}}
    built = []

    def build(nodes):
        built.append(tuple(nodes))
        return Path(str(len(built)))

    def evaluate(p):  # WER falls as the sensitive nodes b, d go back to fp32
        nodes = built[int(str(p)) - 1]
        return 0.1 + 0.05 * ("b" in nodes) + 0.05 * ("d" in nodes)

    res = sens.greedy_fallback(cands, sq, build, evaluate, wer_fp32=0.1, budget=0.01, max_fallback=1.0)
    assert res.kept[:2] == ["b", "d"] and "a" in res.quantized and res.delta <= 0.01
    with pytest.raises(sens.BudgetError, match="unreachable"):
        sens.greedy_fallback(cands, sq, build, evaluate, wer_fp32=0.1, budget=0.01, max_fallback=0.25)
    assert sens.corpus_wer(["a b c", "d"], ["a x c", "d"]) == pytest.approx(0.25)


@needs_audio
def test_cli_accuracy_aware_report(models, tmp_path):
    m = manifest(tmp_path / "c.jsonl", WAVS[:3])
    out, rep = tmp_path / "m.int8.onnx", tmp_path / "r.json"
    res = CliRunner().invoke(main, ["quantize", str(models["rwkv"]["step"]), "--calib", str(m), "--out", str(out),
                                    "--max-wer-drop", "0.5", "--dev", str(m), "--report", str(rep),
                                    "--max-samples", "20"])
    assert res.exit_code == 0, res.output
    r = json.loads(rep.read_text())
    assert r["dev"]["delta_wer"] <= 0.5 and r["nodes_quantized"] > 0
    assert all("sqnr_db" in n for n in r["nodes"] if n["precision"] == "int8")
    assert "ΔWER" in res.output and read_metadata(out)["precision"] == "int8"


@needs_audio
def test_cli_unreachable_budget_writes_nothing(models, tmp_path, monkeypatch):
    m = manifest(tmp_path / "c.jsonl", WAVS[:3])
    out = tmp_path / "m.int8.onnx"
    calls = {"n": 0}

    def fake_wer(path, utts, threads=1, progress=None):  # the fp32 model is perfect, every int8 candidate is worse
        calls["n"] += 1
        return 0.0 if calls["n"] == 1 else 0.5

    monkeypatch.setattr(sens, "dev_wer", fake_wer)
    res = CliRunner().invoke(main, ["quantize", str(models["rwkv"]["step"]), "--calib", str(m), "--out", str(out),
                                    "--max-wer-drop", "0.01", "--dev", str(m), "--max-samples", "12"])
    assert res.exit_code == 2 and "unreachable" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()[-1]) > 0 and not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@needs_audio
def test_keep_fp32_globs_keep_the_named_nodes_fp32(models, tmp_path):
    m = manifest(tmp_path / "c.jsonl", WAVS[:3])
    out, rep = tmp_path / "k.int8.onnx", tmp_path / "k.json"
    res = CliRunner().invoke(main, ["quantize", str(models["rwkv"]["step"]), "--calib", str(m), "--out", str(out),
                                    "--keep-fp32", "/conv*/Conv", "--keep-fp32", "/out/MatMul", "--max-samples", "20",
                                    "--report", str(rep)])
    assert res.exit_code == 0, res.output
    r = json.loads(rep.read_text())
    kept = {n["node"]: n for n in r["nodes"] if "--keep-fp32" in n["reason"]}
    assert set(kept) == {"/conv/Conv", "/conv_1/Conv", "/out/MatMul"}  # the subsampling convs and projection
    assert all(n["precision"] == "fp32" for n in kept.values()) and r["nodes_quantized"] > 10
    g = onnx.load(str(out)).graph
    made_by = {o: n.op_type for n in g.node for o in n.output}
    for n in g.node:
        if n.name in kept:  # no Q/DQ on the kept node's inputs: it runs in fp32
            assert all(made_by.get(i) != "DequantizeLinear" for i in n.input), n.name
        elif n.name in {x["node"] for x in r["nodes"] if x["precision"] == "int8"}:
            assert made_by.get(n.input[1]) == "DequantizeLinear", n.name
    recipe = json.loads(read_metadata(out)["quant_recipe"])
    assert {k["node"] for k in recipe["kept_fp32"] if "--keep-fp32" in k["reason"]} == set(kept)


@needs_audio
@pytest.mark.parametrize("pattern, needle", [("/nope*", "matches no int8 candidate"), ("*", "nothing left")])
def test_keep_fp32_bad_pattern_is_one_line_and_writes_nothing(models, tmp_path, pattern, needle):
    out = tmp_path / "k.int8.onnx"
    code, msg = _run([models["rwkv"]["step"], "--calib", manifest(tmp_path / "c.jsonl", WAVS[:3]), "--out", out,
                      "--keep-fp32", pattern])
    assert code == 2 and needle in msg and "Traceback" not in msg and len(msg.strip().splitlines()) == 1
    assert not out.exists()


# --- bad input ---------------------------------------------------------------------------------------------------
def _run(args):
    res = CliRunner().invoke(main, ["quantize", *map(str, args)])
    return res.exit_code, res.output


@needs_audio
def test_bad_inputs_one_line_no_file(models, quantized, tmp_path):
    step = models["rwkv"]["step"]
    out = tmp_path / "o.int8.onnx"
    one = manifest(tmp_path / "one.jsonl", WAVS[:1])
    code, msg = _run([step, "--calib", one, "--out", out])
    assert code == 2 and "too small" in msg
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, msg = _run([step, "--calib", empty, "--out", out])
    assert code == 2 and "no usable rows" in msg
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    code, msg = _run([step, "--calib", manifest(tmp_path / "b.jsonl", [WAVS[0], str(bad), WAVS[1]]), "--out", out])
    assert code == 2 and "unreadable" in msg and str(bad) in msg
    q8, _ = quantized("rwkv")
    code, msg = _run([q8, "--calib", manifest(tmp_path / "ok.jsonl", WAVS[:3]), "--out", out])
    assert code == 2 and "already quantized" in msg
    code, msg = _run([step, "--calib", tmp_path / "ok.jsonl", "--out", out, "--max-wer-drop", "0.1"])
    assert code == 2 and "--dev" in msg
    for code, msg in [(code, msg)]:
        assert "Traceback" not in msg
    assert not out.exists() and [p for p in tmp_path.iterdir() if p.name.startswith(".o.int8")] == []


def test_already_quantized_detection():
    m = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("DequantizeLinear", ["w", "s"], ["y"])], "g", [],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    assert "DequantizeLinear" in cq.already_quantized(m)
    with pytest.raises(UserError):
        raise cq.QuantizeError("x")


@needs_audio
def test_minmax_ranges_cover_every_calibration_sample(models, tmp_path, monkeypatch):
    """Regression: ORT's CalibMaxIntermediateOutputs drops full batches without computing their ranges; the
    strided MinMax must see every planned sample (here 2.5 strides' worth, cut to whole strides)."""
    from edgeasr.calibration import quantize as q

    r = cdata.StreamingCalibrationReader(models["rwkv"]["step"], WAVS[:3], max_samples=40)
    planned = cdata.check_calibration(r)["samples"]
    assert planned == 32 and len(r) == 32
    served = []
    real_next = r.get_next

    def counting_next():
        feeds = real_next()
        if feeds is not None:
            served.append(1)
        return feeds

    monkeypatch.setattr(r, "get_next", counting_next)
    chosen = [c.name for c in q.select_nodes(q.load(models["rwkv"]["step"])) if c.quantize]
    q.quantize_to(models["rwkv"]["step"], r, tmp_path / "m.int8.onnx", chosen)
    assert len(served) == 32


def test_report_text_is_a_summary_unless_all_nodes():
    from edgeasr.calibration.report import format_report

    nodes = [{"node": f"mm{i}", "precision": "int8", "reason": "per-frame MatMul", "sqnr_db": 40.0 - i}
             for i in range(30)] + [{"node": "ctc", "precision": "fp32", "reason": "policy: CTC head", "sqnr_db": None}]
    r = {"out": "m.int8.onnx", "nodes_quantized": 30, "nodes_kept_fp32": 1, "method": "minmax",
         "calibration": {"samples": 8, "utterances": 2}, "size_bytes": {"fp32": 4e6, "int8": 1e6, "ratio": 4.0},
         "nodes": nodes}
    short, full = format_report(r), format_report(r, all_nodes=True)
    assert "30 int8  per-frame MatMul" in short and "1 fp32  policy: CTC head" in short
    assert "mm29" in short and "mm0 " not in short  # the five weakest nodes only
    assert all(n["node"] in full for n in nodes) and len(full.splitlines()) == 2 + len(nodes)


class _ListReader:
    """A calibration reader over fixed feeds, with what quantize_to asks of the product's reader."""
    kind = "step"

    def __init__(self, feeds):
        self.feeds, self.start, self.end, self.i = feeds, 0, len(feeds), 0

    def __len__(self):
        return len(self.feeds)

    def set_range(self, start_index, end_index):
        self.start, self.end, self.i = start_index, min(end_index, len(self.feeds)), start_index

    def get_next(self):
        if self.i >= self.end:
            return None
        self.i += 1
        return self.feeds[self.i - 1]


def test_matmuls_that_share_an_input_each_get_their_own_q(tmp_path):
    """Three Linears reading one tensor (as unfused q/k/v projections would): ORT's quantizer puts one Q before all
    three, and ORT then leaves them as fp32 MatMuls that dequantize their weights every call. quantize_to gives each
    its own Q -> DQ, so all three fuse into MatMulIntegerToFloat; the graph stays TensorRT-clean and close to fp32."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    d = 32
    weights = [numpy_helper.from_array((rng.standard_normal((d, d)) / d ** 0.5).astype(np.float32), f"onnx::MatMul_{i}")
               for i in range(3)]
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="act")]
    nodes += [helper.make_node("MatMul", ["h", f"onnx::MatMul_{i}"], [f"y{i}"], name=f"proj{i}") for i in range(3)]
    nodes += [helper.make_node("Add", ["y0", "y1"], ["s"]), helper.make_node("Add", ["s", "y2"], ["out"])]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "t", d])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "t", d])], weights)
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
    feeds = [{"x": rng.standard_normal((1, 8, d)).astype(np.float32)} for _ in range(8)]
    out = tmp_path / "int8.onnx"
    cq.quantize_to(fp32, _ListReader(feeds), out, ["proj0", "proj1", "proj2"])

    m = onnx.load(str(out))
    assert sum(n.op_type == "QuantizeLinear" for n in m.graph.node) == 3
    assert cq.one_q_per_matmul(m) == 0  # already one each
    assert _ort_optimized_ops(out, tmp_path).count("MatMulIntegerToFloat") == 3
    assert not [p for p in lint_model(out) if p.severity == "error"]
    x = feeds[0]["x"]
    ref, got = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                for p in (fp32, out))
    assert np.abs(ref - got).max() < 0.05 * np.abs(ref).max()
