"""Step-graph speed (issue 32; a benchmark, not a test): per-chunk time of step graphs on ONNX Runtime and
OpenVINO CPU, 1 thread, every (backend, model, chunk) cell interleaved inside each round so that load on a shared
machine hits all cells alike; medians over rounds.

Printed per backend and model: the median call time at 160/320/640 ms chunks (16/32/64 fbank frames), the speed
ratio against the first model, the fixed cost ``a`` of a least-squares fit ``time = a + b * frames`` (and its share
of a 320 ms call), the fraction of this machine's 1-thread fp32 matmul peak (an ORT MatMul 1024^3 measured in the
same run; useful work = the multiply-adds of every MatMul/Gemm/Conv with a constant weight in the first model's
graph), encoder-only RTF, and pocketsphinx's RTF on the same audio when it is importable (the throughput ratio is
pocketsphinx RTF / our RTF at 320 ms). ``--nodes`` prints each model's node count after ORT's optimisation and the
dispatch floor it implies (ORT's per-node cost for the smallest work, measured on a chain of tiny nodes);
``--profile`` an ORT op-type profile of each model at 320 ms; ``--streams 1,4,16`` 320 ms calls holding several
streams at once (per-stream cost, int8's gain there); ``--ceiling`` the first model's weight MatMuls
alone, fp32, int8 and dynamic int8, on ORT and OpenVINO at 160/320/640 ms (the most any graph of this model gets
out of each backend's kernels).

Usage: python benchmarks/step_speed.py fp32=default.step.onnx int8=default.step.int8.onnx [dyn=...] \
           [--rounds 9] [--calls 12] [--nodes] [--profile] [--streams 1,4,16] [--ceiling]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from edgeasr.data.manifest import read_manifest  # noqa: E402
from edgeasr.runtimes.audio import load_audio  # noqa: E402
from edgeasr.runtimes.backends import available, get_backend  # noqa: E402
from edgeasr.runtimes.features import compute_fbank  # noqa: E402
from edgeasr.runtimes.metadata import read_metadata  # noqa: E402
from edgeasr.runtimes.session import fbank_options  # noqa: E402

CHUNKS = (16, 32, 64)  # fbank frames: 160 / 320 / 640 ms at a 10 ms shift


def ort_session(path, profile: bool = False, optimized: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.enable_profiling = profile
    if optimized:
        so.optimized_model_filepath = optimized
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def matmul_peak(rounds: int) -> float:
    """1-thread fp32 GFLOP/s of one ORT MatMul [1024,1024] x [1024,1024] (constant B, as a Linear weight)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = 1024
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "mm",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "mm.onnx"
        onnx.save(m, str(p))
        s = ort_session(p)
    a = rng.standard_normal((n, n)).astype(np.float32)
    s.run(None, {"a": a})
    ts = []
    for _ in range(rounds):
        t = time.perf_counter()
        s.run(None, {"a": a})
        ts.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(ts) / 1e9


def weight_macs(path, frames: int) -> int:
    """Multiply-adds of one call of ``frames`` fbank frames in every MatMul/Gemm/Conv/Einsum with a constant weight
    (the per-frame Linear/Conv work; recurrence products between activations are not counted)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    # multiply-adds by nonzero weights only: a fused block-diagonal weight does no more useful work than its blocks
    nonzero = {t.name: float(np.count_nonzero(numpy_helper.to_array(t))) / max(1, int(np.prod(t.dims)))
               for t in m.graph.initializer}
    del m.graph.value_info[:]  # the export's symbolic shapes: infer them again from the fixed input shapes
    inits = {t.name: list(t.dims) for t in m.graph.initializer}
    for inp in m.graph.input:  # fix every dynamic dim: batch 1, x frames
        dims = inp.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if not d.HasField("dim_value"):
                d.dim_value = frames if (inp.name == "x" and i == 1) else 1
    m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    # a dim left symbolic is the batch (1): the frame axes all derive from x
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else 1 for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.output)}
    macs = 0
    for n in m.graph.node:
        if n.op_type == "Einsum" and n.input[-1] in inits and n.output[0] in shapes:  # e.g. "btfl,fld->fbtd"
            eq = next(a.s.decode() for a in n.attribute if a.name == "equation").replace(" ", "")
            w_idx, out_idx = eq.split("->")[0].split(",")[-1], eq.split("->")[1]
            w = inits[n.input[-1]]
            macs += int(np.prod(shapes[n.output[0]])) * int(np.prod(
                [d for c, d in zip(w_idx, w) if c not in out_idx] or [1])) * nonzero[n.input[-1]]
            continue
        if n.op_type not in ("MatMul", "Gemm", "Conv") or len(n.input) < 2 or n.input[1] not in inits:
            continue
        w, out = inits[n.input[1]], shapes.get(n.output[0])
        if not out:
            continue
        if n.op_type == "Conv":  # out [B, Cout, L], w [Cout, Cin/g, k]
            macs += int(np.prod(out)) * int(np.prod(w[1:])) * nonzero[n.input[1]]
        else:  # out [..., N], w [K, N] (or stacked [S, K, N])
            macs += int(np.prod(out)) * w[-2] * nonzero[n.input[1]]
    return int(macs)


def features(n_frames: int, test: Path, min_s: float = 20.0) -> tuple[np.ndarray, list[np.ndarray], float]:
    """Fbank of consecutive test utterances (>= n_frames), and the audio (>= min_s seconds, for pocketsphinx)."""
    feats, audio, dur = [], [], 0.0
    for e in read_manifest(test):
        a = load_audio(e.audio_filepath)[0]
        audio.append(a)
        dur += len(a) / 16000
        feats.append(compute_fbank(a))
        if sum(len(f) for f in feats) >= n_frames and dur >= min_s:
            break
    return np.concatenate(feats)[:n_frames], audio, dur


def time_calls(backend, handle, x: np.ndarray, chunk: int, calls: int) -> float:
    """Median seconds per call over ``calls`` consecutive chunks of ``x`` (``[T, F]``, or ``[streams, T, F]`` for
    several streams per call), from a fresh utterance state."""
    handle = backend.reset_state(handle)
    x = x if x.ndim == 3 else x[None]
    ts = []
    for i in range(calls):
        c = x[:, i * chunk:(i + 1) * chunk]
        t = time.perf_counter()
        _, handle = backend.step(c, handle)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def pocketsphinx_rtf(audio: list[np.ndarray], dur: float) -> float | None:
    try:
        from pocketsphinx import Decoder
    except ImportError:
        return None
    dec = Decoder(loglevel="FATAL")
    t = time.perf_counter()
    for a in audio:
        dec.start_utt()
        dec.process_raw((np.clip(a, -1, 1) * 32767).astype("<i2").tobytes(), full_utt=True)
        dec.end_utt()
    return (time.perf_counter() - t) / dur


def ort_nodes(path) -> dict:
    import onnx

    with tempfile.TemporaryDirectory() as d:
        opt = str(Path(d) / "opt.onnx")
        ort_session(path, optimized=opt)
        m = onnx.load(opt)
    hist = {}
    for n in m.graph.node:
        hist[n.op_type] = hist.get(n.op_type, 0) + 1
    return {"nodes": len(m.graph.node), "top": dict(sorted(hist.items(), key=lambda kv: -kv[1])[:12])}


SHAPE_OPS = {"Reshape", "Transpose", "Concat", "Slice", "Gather", "Unsqueeze", "Squeeze", "Shape", "Split", "Cast",
             "Range", "ConstantOfShape", "Expand", "Pad", "Tile"}
QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


def _category(op: str, node: str, weighted: set) -> str:
    if op in QUANT_OPS:
        return "Q/DQ"
    if op in SHAPE_OPS:
        return "shape/copy"
    if op in ("MatMul", "FusedMatMul", "Gemm", "Conv", "Einsum") or "Integer" in op or op.startswith("QLinear") \
            or op == "DynamicQuantizeMatMul":
        return "weight MatMul/Conv" if node in weighted or op != "MatMul" else "activation MatMul"
    if "Norm" in op:
        return "norms"
    return "elementwise"


def ort_profile(path, x: np.ndarray, chunk: int = 32, calls: int = 60) -> dict:
    """Share of ORT kernel time per op type and per category over ``calls`` 320 ms calls (the states fed back)."""
    import onnx

    with tempfile.TemporaryDirectory() as d:  # which MatMuls of the optimized graph have a constant weight
        ort_session(path, optimized=str(Path(d) / "opt.onnx"))
        m = onnx.load(str(Path(d) / "opt.onnx"))
    inits = {t.name for t in m.graph.initializer}
    weighted = {n.name for n in m.graph.node if len(n.input) > 1 and n.input[1] in inits}
    s = ort_session(path, profile=True)
    meta = read_metadata(path)
    names = [o.name for o in s.get_outputs()]
    state = {f"in.{st['name']}": np.full((1, *st["shape"]), st.get("init", 0.0), np.float32) for st in meta["states"]}
    for i in range(calls):
        j = i % (len(x) // chunk)
        out = dict(zip(names, s.run(None, {"x": x[None, j * chunk:(j + 1) * chunk], **state})))
        state = {f"in.{st['name']}": out[f"out.{st['name']}"] for st in meta["states"]}
    prof = Path(s.end_profiling())
    by_op: dict[str, float] = {}
    by_cat: dict[str, float] = {}
    for ev in json.loads(prof.read_text()):
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
            op = ev["args"].get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + ev["dur"]
            cat = _category(op, ev["name"][:-len("_kernel_time")], weighted)
            by_cat[cat] = by_cat.get(cat, 0.0) + ev["dur"]
    prof.unlink()
    total = sum(by_op.values())
    return {"kernel_ms_per_call": total / calls / 1e3,
            "share": {k: round(v / total, 3) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])[:8]},
            "category": {k: round(v / total, 3) for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])}}


def node_floor_us(rounds: int = 5, n: int = 700) -> float:
    """ORT's cost per node for the smallest work: a chain of ``n`` Add/Mul nodes on a [1, 8, 144] tensor (one
    320 ms chunk's encoder frames), 1 thread, median microseconds per node. Times a step graph's node count, it is
    the part of a call that no kernel can speed up."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    shape = [1, 8, 144]
    c = numpy_helper.from_array(np.full(shape[-1:], 0.5, np.float32), "c")
    nodes, prev = [], "x"
    for i in range(n):
        nodes.append(helper.make_node("Mul" if i % 2 else "Add", [prev, "c"], [f"t{i}"]))
        prev = f"t{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [c])
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every node
    sess = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                                .SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(20):
        sess.run(None, {"x": x})
    per_call = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(100):
            sess.run(None, {"x": x})
        per_call.append((time.perf_counter() - t) / 100)
    return statistics.median(per_call) / n * 1e6


def matmul_ceiling(path, enc_frames=(4, 8, 16), rounds: int = 5, backends=("ort", "openvino")) -> list[dict]:
    """The model's weight MatMuls alone, as independent nodes (one input per inner size K, no other op), timed at
    ``enc_frames`` rows (the encoder frames of a 160/320/640 ms call) in fp32, in the QDQ int8 format `edgeasr
    quantize` writes (S8S8 symmetric, per-channel weights, no output Q/DQ) and in ORT's dynamic format: the most
    any step graph of this model could get out of each backend's MatMul kernels at these chunk sizes.
    Returns one row per (backend, rows): ms per call per format and fp32 GFLOP/s."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgeasr.calibration.quantize import extra_options, quantize_dynamic_to

    m = onnx.load(str(path))
    inits = {t.name: t for t in m.graph.initializer}
    # [K, N] weights, and stacked [S, K, N] ones (fused projections: one batched MatMul over S inputs)
    shapes = [tuple(inits[n.input[1]].dims) for n in m.graph.node if n.op_type == "MatMul" and len(n.input) > 1
              and n.input[1] in inits and len(inits[n.input[1]].dims) in (2, 3)]
    rng = np.random.default_rng(0)
    lead = lambda w: tuple(w[:-2])  # noqa: E731  () or (S,)
    kinds = sorted({(*lead(w), w[-2]) for w in shapes})  # one input per (S, K): shared as in the model
    name = lambda kind: "x" + "_".join(map(str, kind))  # noqa: E731
    nodes, weights = [], []
    for i, w in enumerate(shapes):
        weights.append(numpy_helper.from_array((rng.standard_normal(w) / np.sqrt(w[-2])).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"y{i}"], name=f"mm{i}"))
    # outputs joined per rank: a MatMul that writes a graph output is not fused with its Q/DQ by ORT
    outs = []
    for rank in sorted({len(w) for w in shapes}):
        ys = [f"y{i}" for i, w in enumerate(shapes) if len(w) == rank]
        nodes.append(helper.make_node("Concat", ys, [f"out{rank}"], axis=-1))
        outs.append(helper.make_tensor_value_info(f"out{rank}", TensorProto.FLOAT, None))
    matmuls = nodes[:len(shapes)]
    # each MatMul reads its own tensor (a Mul by 1 of the shared input), as in the model: ORT fuses Q/DQ -> MatMul
    # into MatMulIntegerToFloat only where one Q feeds one MatMul (two MatMuls behind one Q stay fp32 MatMuls
    # that dequantize their weights every call, ~10x slower)
    weights.append(numpy_helper.from_array(np.ones((), np.float32), "one"))
    nodes += [helper.make_node("Mul", [name((*lead(w), w[-2])), "one"], [f"h{i}"]) for i, w in enumerate(shapes)]
    inputs = [helper.make_tensor_value_info(name(k), TensorProto.FLOAT, [*(k[:-1] or (1,)), "m", k[-1]])
              for k in kinds]
    fp32 = helper.make_model(helper.make_graph(nodes, "weights_only", inputs, outs, weights),
                             opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    macs_per_row = sum(int(np.prod(w)) for w in shapes)
    feeds_for = lambda M: {name(k): rng.standard_normal((*(k[:-1] or (1,)), M, k[-1])).astype(np.float32)  # noqa: E731
                           for k in kinds}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([feeds_for(8) for _ in range(4)])

        def get_next(self):
            return next(self.feeds, None)

    runners = {}
    with tempfile.TemporaryDirectory() as d:
        files = {"fp32": Path(d) / "w.onnx", "int8": Path(d) / "w.int8.onnx", "dynamic": Path(d) / "w.dyn.onnx"}
        onnx.save(fp32, str(files["fp32"]))
        # int8 takes the 2-D (Linear) weights, as `edgeasr quantize` does; the stacked ones stay fp32 in every format
        linear = [n.name for n, w in zip(matmuls, shapes) if len(w) == 2]
        quantize_static(str(files["fp32"]), str(files["int8"]), Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul"], nodes_to_quantize=linear, per_channel=True, reduce_range=False,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        extra_options={k: v for k, v in extra_options("minmax", 4, "step").items()
                                       if k != "CalibStridedMinMax"})  # four samples: one pass, no strides
        quantize_dynamic_to(files["fp32"], files["dynamic"], linear)
        for fmt, f in files.items():
            if "ort" in backends:
                s = ort_session(f)
                runners["ort", fmt] = lambda feeds, s=s: s.run(None, feeds)
            if "openvino" in backends and fmt != "dynamic":  # dynamic int8 is an ORT format
                import openvino as ov

                from edgeasr.runtimes.backends.openvino import compile_config

                c = ov.Core().compile_model(str(f), "CPU", compile_config())  # as the backend compiles
                req = c.create_infer_request()
                runners["openvino", fmt] = lambda feeds, r=req: r.infer(feeds)
    rows = []
    for M in enc_frames:
        feeds = feeds_for(M)
        times: dict = {k: [] for k in runners}
        for _ in range(rounds):  # interleaved: load on the machine hits every format alike
            for key, run in runners.items():
                for _ in range(5):
                    run(feeds)
                t = time.perf_counter()
                for _ in range(50):
                    run(feeds)
                times[key].append((time.perf_counter() - t) / 50)
        for bname in dict.fromkeys(b for b, _ in runners):
            med = {fmt: statistics.median(times[bname, fmt]) * 1e3 for b, fmt in runners if b == bname}
            rows.append({"backend": bname, "rows": M, "matmuls": len(shapes), "ms": med,
                         "gflops": 2 * macs_per_row * M / med["fp32"] / 1e6, "weight_mb": 4 * macs_per_row / 1e6})
    return rows


def batched_streams(models: list, backends: list[str], x: np.ndarray, streams: list[int], rounds: int,
                    calls: int) -> dict:
    """Median seconds of a 320 ms call that holds ``n`` streams (the same audio in every row), per (backend, model,
    n), interleaved over rounds like the main table. Each n has its own sessions: one input shape per session, as a
    server with a fixed batch of streams would run (alternating shapes on one session re-plans its memory)."""
    cells = {}
    for bname in backends:
        for label, path in models:
            for n in streams:
                b = get_backend(bname, path, threads=1).activate()
                getattr(b, "prepare_chunk", lambda frames: None)(32)
                h, xb = b.init_state(n), np.repeat(x[None], n, 0)
                time_calls(b, h, xb, 32, 3)  # warm-up: first-call allocations
                cells[bname, label, n] = (b, h, xb)
    times: dict = {k: [] for k in cells}
    order, rng = list(cells), np.random.default_rng(0)
    for _ in range(rounds):
        for j in rng.permutation(len(order)):  # a new order each round: no cell always runs first, cache-cold
            b, h, xb = cells[order[j]]
            time_calls(b, h, xb, 32, 4)  # untimed: this session's weights back in cache after the other cells ran
            times[order[j]].append(time_calls(b, h, xb, 32, min(calls, xb.shape[1] // 32)))
    return {k: statistics.median(v) for k, v in times.items()}


def fit(frames: list[int], times: list[float]) -> tuple[float, float]:
    b, a = np.polyfit(np.asarray(frames, float), np.asarray(times, float), 1)
    return float(a), float(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="LABEL=PATH step graphs; the first is the reference (fp32)")
    ap.add_argument("--backends", default="ort,openvino")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=12, help="consecutive chunks timed per cell and round")
    ap.add_argument("--test", type=Path, default=ROOT / "work/corpus/test.jsonl")
    ap.add_argument("--nodes", action="store_true", help="print ORT-optimized node counts")
    ap.add_argument("--profile", action="store_true", help="print an ORT op-type profile at 320 ms")
    ap.add_argument("--streams", default="", help="also time 320 ms calls holding this many streams at once, e.g. "
                    "1,4,16 (how the Recognizer batches concurrent streams): per-stream cost and int8's gain there")
    ap.add_argument("--ceiling", action="store_true",
                    help="time the first model's weight MatMuls alone (fp32 and int8): the kernels' own limit")
    a = ap.parse_args()
    models = [tuple(m.split("=", 1)) for m in a.models]
    x, audio, dur = features(max(CHUNKS) * a.calls, a.test)
    backends = []
    for name in a.backends.split(","):
        ok, why = available(name)
        (backends.append(name) if ok else print(f"# {name} skipped: {why}"))

    cells = {}  # (backend, label) -> (backend object, state handle)
    for bname in backends:
        for label, path in models:
            b = get_backend(bname, path, threads=1).activate()
            for c in CHUNKS:  # what StreamingSession does for its chunk (OpenVINO: static-shape models)
                getattr(b, "prepare_chunk", lambda frames: None)(c)
            h = b.init_state(1)
            for c in CHUNKS:  # warm-up: first-call allocations, lazily compiled shapes
                time_calls(b, h, x, c, 3)
            cells[bname, label] = (b, h)
    peak = []
    times = {k: {c: [] for c in CHUNKS} for k in cells}
    for _ in range(a.rounds):
        peak.append(matmul_peak(3))
        for key, (b, h) in cells.items():
            for c in CHUNKS:
                times[key][c].append(time_calls(b, h, x, c, a.calls))
    peak_gflops = statistics.median(peak)
    macs = {c: weight_macs(models[0][1], c) for c in CHUNKS}
    ps = pocketsphinx_rtf(audio, dur)

    print(f"# step_speed: 1 thread, {a.rounds} rounds x {a.calls} calls per cell, medians; {time.strftime('%F %T')}")
    print(f"# matmul peak (ORT MatMul 1024^3, 1 thread): {peak_gflops:.1f} GFLOP/s; useful work per call "
          f"(weight MACs of {models[0][0]}): " + ", ".join(f"{c * 10} ms {macs[c] / 1e6:.1f} M" for c in CHUNKS))
    print(f"{'backend':9} {'model':8} {'mode':34} " + " ".join(f"{c * 10:>4}ms" for c in CHUNKS)
          + "   x_ref@320  a(ms)  a/320ms  %peak@320  RTF@320")
    for (bname, label), (b, _) in cells.items():
        med = {c: statistics.median(times[bname, label][c]) for c in CHUNKS}
        ref = statistics.median(times[bname, models[0][0]][32])
        fa, _ = fit(list(CHUNKS), [med[c] for c in CHUNKS])
        pct = 2 * macs[32] / med[32] / (peak_gflops * 1e9)
        mode = getattr(b, "mode", "") or ""
        print(f"{bname:9} {label:8} {mode[:34]:34} " + " ".join(f"{med[c] * 1e3:6.2f}" for c in CHUNKS)
              + f"   {ref / med[32]:8.2f}  {fa * 1e3:5.2f}  {fa / med[32]:6.0%}  {pct:8.1%}  {med[32] / 0.32:7.4f}")
    if ps is not None:
        ours = statistics.median(times[backends[0], models[0][0]][32]) / 0.32
        print(f"# pocketsphinx (1 thread, {len(audio)} utterances, {dur:.1f} s): RTF {ps:.3f}; "
              f"throughput x{ps / ours:.1f} ({backends[0]} {models[0][0]} encoder-only at 320 ms, RTF {ours:.4f})")
    else:
        print("# pocketsphinx not importable: no peer ratio")
    if a.nodes:
        floor = node_floor_us()
        for label, path in models:
            n = ort_nodes(path)
            print(f"# ORT-optimized nodes {label}: {n['nodes']}  {n['top']}")
            if "ort" in backends:
                med = statistics.median(times["ort", label][32])
                print(f"#   dispatch floor {label}: {n['nodes']} nodes x {floor:.2f} us (a chain of tiny Add/Mul "
                      f"nodes) = {n['nodes'] * floor / 1e3:.2f} ms, {n['nodes'] * floor / 1e3 / (med * 1e3):.0%} "
                      f"of its 320 ms call")
    if a.streams:
        batched = batched_streams(models, backends, x, [int(n) for n in a.streams.split(",")], a.rounds, a.calls)
        ref_label = models[0][0]
        for (bname, label, n), t in batched.items():
            ref, one = batched[bname, ref_label, n], batched[bname, label, 1]
            print(f"# {n:2d} streams per call, {bname} {label}: {t * 1e3:.2f} ms per 320 ms call, {t / n * 1e3:.3f} ms "
                  f"per stream (x{one / (t / n):.2f} of one stream alone), x{ref / t:.2f} vs {ref_label}")
    if a.ceiling:
        for r in matmul_ceiling(models[0][1], backends=backends):
            ms = r["ms"]
            print(f"# weight MatMuls alone on {r['backend']} ({r['matmuls']} nodes, {r['weight_mb']:.1f} MB fp32 "
                  f"weights), {r['rows']} encoder frames ({r['rows'] * 40} ms): fp32 {ms['fp32']:.3f} ms = "
                  f"{r['gflops']:.0f} GFLOP/s, {r['gflops'] / peak_gflops:.0%} of peak; "
                  + ", ".join(f"{k} {v:.3f} ms x{ms['fp32'] / v:.2f}" for k, v in ms.items() if k != "fp32"))
    if a.profile:
        for label, path in models:
            p = ort_profile(path, x)
            print(f"# ORT profile {label} @320ms (profiler on): kernels {p['kernel_ms_per_call']:.2f} ms/call  "
                  f"by category {p['category']}  top ops {p['share']}")


if __name__ == "__main__":
    sys.exit(main())
