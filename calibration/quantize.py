"""The int8 recipe (DESIGN.md §4): which nodes are quantized, and one ONNX Runtime ``quantize_static`` call that writes
the QDQ artifact every backend reads (ORT CPU, OpenVINO CPU, TensorRT >= 10.12).

Recipe (``RECIPE``): QuantFormat.QDQ, activations and weights QInt8 (S8S8), symmetric (zero points all 0),
per-channel weights (MatMul axis 1 = output columns of a ``[K, N]`` weight, Conv axis 0 = output channels), biases
left fp32 (``QuantizeBias=False``: TensorRT rejects the INT32 bias DequantizeLinear ORT writes by default).

Node selection (``select_nodes``) — the rule, stated once:

1. Candidates are ``MatMul``/``Gemm`` with a constant 2-D float weight ``[K, N]`` as second input and ``Conv`` with a
   constant weight. Activation x activation products (attention scores, WKV/SSM state products) have no constant
   weight and are never candidates: they are the recurrence and stay fp32.
2. A MatMul/Gemm weight must be an ``nn.Linear`` weight. The torch exporter stores a Linear's weight transposed
   and folded under a generated name ``onnx::MatMul_<n>`` (Gemm: ``<module>.weight``); a parameter used in a
   functional matmul keeps its own parameter name (RWKV ``time_maa_w1/w2`` and ``time_decay_w1/w2``: the low-rank
   "lora" token-shift and decay projections), and constant matrices of the recurrence are folded ``Constant``
   outputs. So: generated Linear weight -> candidate; named parameter or folded constant -> fp32.
3. Excluded by name (node name or weight name, case-insensitive): ``ctc`` (the CTC projection, also recognised as
   the MatMul that reads the ``encoder_out`` graph output), ``lora``, ``maa``, ``decay``, ``time_`` (RWKV mixing
   parameters), ``offset`` (deformable offsets), ``dt_``/``a_log`` (Mamba step sizes). Norms, exp/softplus,
   gates, token-shift lerp are elementwise ops and never candidates.
4. Conv: only the subsampling convolutions (weight name contains ``subsampling``, ``group == 1``). Depthwise convs
   (conv module, Mamba ``conv1d`` whose window is a carried state) stay fp32.
5. Nothing touching a state: a candidate whose data input or output is a graph input/output (``in.*``/``out.*``,
   ``x``, ``encoder_out``, ``logprobs``) is excluded, so no Q/DQ ever sits on a state tensor.

On top of the rule, ``keep_in_fp32`` keeps candidates the user names (``edgeasr quantize --keep-fp32 GLOB``, globs on
node names as the report lists them), and the accuracy-aware fallback keeps the most sensitive ones.
"""
from __future__ import annotations

import fnmatch
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

from edgeasr.runtimes.errors import UserError
from edgeasr.calibration.data import STRIDE
from edgeasr.runtimes.files import atomic_write, output_path_problem
from edgeasr.runtimes.metadata import PREFIX, read_metadata

METHODS = ("minmax", "percentile", "entropy")
# ORT's histogram calibrators np.asarray() all samples of one collect_data call: their samples must share a shape
HISTOGRAM_METHODS = ("percentile", "entropy")
EXCLUDE_TOKENS = ("ctc", "lora", "maa", "decay", "time_", "offset", "dt_", "a_log")
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearMatMul", "QLinearConv", "MatMulInteger", "ConvInteger",
             "DynamicQuantizeLinear", "MatMulNBits", "DequantizeLinearFixed")
RECIPE = {"format": "QDQ", "activations": "int8", "weights": "int8", "scheme": "S8S8", "symmetric": True,
          "per_channel": True, "per_channel_axis": {"MatMul": 1, "Gemm": 1, "Conv": 0}, "zero_points": 0,
          "bias": "fp32", "outputs": "fp32 after MatMul/Gemm, int8 after Conv",
          "tool": "onnxruntime.quantization.quantize_static"}
# CPU-only alternative (``edgeasr quantize --format dynamic``): int8 weights, activations quantized per call by the
# runtime (ORT DynamicQuantizeLinear -> MatMulInteger); no calibrated ranges, not a TensorRT file
DYNAMIC_RECIPE = {"format": "dynamic", "activations": "uint8 per call (DynamicQuantizeLinear)", "weights": "int8",
                  "per_channel": True, "bias": "fp32", "tool": "onnxruntime.quantization.quantize_dynamic"}
FORMATS = ("qdq", "dynamic")


class QuantizeError(UserError):
    """A quantization that cannot or must not be written; one line for the user."""


@dataclass
class NodeChoice:
    name: str
    op_type: str
    weight: str
    shape: list
    quantize: bool
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def load(path) -> onnx.ModelProto:
    p = Path(path)
    if not p.is_file():
        raise QuantizeError(f"{p}: no such ONNX file")
    try:
        return onnx.load(str(p))
    except Exception as e:
        raise QuantizeError(f"{p}: not a readable ONNX file ({type(e).__name__})") from None


def already_quantized(model: onnx.ModelProto) -> str | None:
    """Why ``model`` is already quantized (precision metadata or quantized ops), or None."""
    meta = {p.key: p.value for p in model.metadata_props}
    prec = meta.get(PREFIX + "precision", "fp32")
    if prec not in ("fp32", ""):
        return f"its edgeasr.precision is {prec}"
    ops = sorted({n.op_type for n in model.graph.node} & set(QUANT_OPS))
    if ops:
        return f"it already contains {', '.join(ops)}"
    if any(t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) for t in model.graph.initializer):
        return "it already has int8 weights"
    return None


def select_nodes(model: onnx.ModelProto) -> list[NodeChoice]:
    """Every MatMul/Gemm/Conv with a constant weight, with the decision and its reason (see the module doc)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    io = {v.name for v in g.input} | {v.name for v in g.output}
    consts = {o for n in g.node if n.op_type == "Constant" for o in n.output}
    out = []
    for n in g.node:
        if n.op_type not in ("MatMul", "Gemm", "Conv") or len(n.input) < 2:
            continue
        w = n.input[1]
        if w not in inits and w not in consts:
            continue  # activation x activation: recurrence/attention products, not a weight
        t = inits.get(w)
        shape = list(t.dims) if t is not None else []
        low = (n.name + " " + w).lower()

        def choice(ok: bool, reason: str) -> NodeChoice:
            return NodeChoice(n.name, n.op_type, w, shape, ok, reason)

        if t is None or t.data_type != onnx.TensorProto.FLOAT:
            out.append(choice(False, "weight is not an fp32 initializer"))
            continue
        hit = next((tok for tok in EXCLUDE_TOKENS if tok in low), None)
        if hit:
            what = {"ctc": "CTC projection", "lora": "low-rank projection", "maa": "low-rank token-shift (ddlerp)",
                    "decay": "decay projection", "time_": "RWKV mixing parameter", "offset": "deformable offsets",
                    "dt_": "Mamba step size", "a_log": "Mamba A"}[hit]
            out.append(choice(False, f"{what} (name contains {hit!r})"))
            continue
        if n.input[0] in io or any(o in io for o in n.output):
            out.append(choice(False, "reads or writes a graph input/output (state or boundary tensor)"))
            continue
        if n.op_type == "Conv":
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            if "subsampling" in w and group == 1:
                out.append(choice(True, "subsampling conv"))
            else:
                out.append(choice(False, "depthwise/stateful conv" if group != 1 else "not a subsampling conv"))
            continue
        if len(shape) != 2:
            out.append(choice(False, f"weight of rank {len(shape)} (not a Linear)"))
            continue
        if "Constant" in w or w in consts:
            out.append(choice(False, "folded constant matrix (recurrence/mask)"))
            continue
        if not (w.startswith("onnx::MatMul") or w.startswith("onnx::Gemm") or w.endswith(".weight")):
            out.append(choice(False, "named parameter in a functional matmul (low-rank/mixing)"))
            continue
        out.append(choice(True, "per-frame Linear"))
    return out


def keep_in_fp32(choices: list[NodeChoice], patterns: list[str]) -> None:
    """Keep the candidates whose node name matches one of the glob ``patterns`` in fp32 (in place). A pattern that
    matches no candidate is a user mistake (a typo would otherwise quantize everything silently)."""
    candidates = [c for c in choices if c.quantize]
    for pat in patterns:
        hits = [c for c in candidates if fnmatch.fnmatchcase(c.name, pat)]
        if not hits:
            raise QuantizeError(f"--keep-fp32 {pat!r} matches no int8 candidate node (their names: "
                                f"edgeasr quantize ... --all-nodes)")
        for c in hits:
            if c.quantize:
                c.quantize, c.reason = False, f"kept fp32 (--keep-fp32 {pat})"
    if candidates and not any(c.quantize for c in choices):
        raise QuantizeError(f"--keep-fp32 {' '.join(patterns)} keeps every candidate in fp32: nothing left to quantize")


def extra_options(method: str, samples: int, graph_kind: str) -> dict:
    opts = {"QuantizeBias": False, "ActivationSymmetric": True, "WeightSymmetric": True,
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1, "Gemm": 1, "Conv": 0},
            "CalibTensorRangeSymmetric": True, "DedicatedQDQPair": False,
            # Q/DQ only on the inputs of a MatMul/Gemm: its output feeds fp32 ops (bias, norms, gates, the WKV),
            # so an output Q -> DQ pair is pure cost (measured: 188 extra nodes, int8 slower than fp32), while
            # DQ(x), DQ(w) -> MatMul fuses on ORT into MatMulIntegerToFloat and on OpenVINO into an int8 MatMul.
            # Conv outputs stay quantized: ORT fuses the subsampling Conv only as QLinearConv.
            "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]}
    if method == "minmax":
        # Bounded memory with every sample counted: ORT merges the ranges of each stride. (Its
        # CalibMaxIntermediateOutputs is not usable: ORT 1.31 drops each full batch without computing its range.)
        opts["CalibStridedMinMax"] = min(STRIDE, samples)
    elif graph_kind == "full":
        # full-graph samples differ in T (HISTOGRAM_METHODS): ORT's strided path (keyed on this option whatever the
        # method) collects one sample per call and merges the histograms. Not for step graphs: the first call fixes
        # each tensor's bin width, tiny for the all-zero initial states, and the run was killed after 3 minutes;
        # their samples share one shape instead (calibration/data.py, same_shape).
        opts["CalibStridedMinMax"] = 1
    if method == "percentile":
        opts["CalibPercentile"] = 99.999
    return opts


def _method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    if method not in METHODS:
        raise QuantizeError(f"unknown calibration method {method!r}; choose {', '.join(METHODS)}")
    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[method]


def quantize_to(model_path, reader, out_path, nodes: list[str], method: str = "minmax",
                cache_path: str | Path | None = None) -> None:
    """One ``quantize_static`` call (QDQ S8S8 symmetric per-channel) of ``nodes``; ranges are taken from
    ``cache_path`` when it exists (written there otherwise), so the fallback search calibrates once."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if not nodes:
        raise QuantizeError("no node selected for int8 (nothing to quantize in this graph)")
    logging.getLogger().setLevel(logging.ERROR)  # ORT's "consider pre-processing" warnings
    quantize_static(str(model_path), str(out_path), reader, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul", "Gemm", "Conv"], per_channel=True, reduce_range=False,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_quantize=list(nodes),
                    calibrate_method=_method(method), extra_options=extra_options(method, len(reader), reader.kind),
                    calibration_cache_path=None if cache_path is None else str(cache_path))
    model = onnx.load(str(out_path))
    if one_q_per_matmul(model):
        onnx.save(model, str(out_path))


def one_q_per_matmul(model: onnx.ModelProto) -> int:
    """Give every int8 MatMul/Gemm its own QuantizeLinear -> DequantizeLinear on its activation (in place); returns
    how many pairs were added. Why (measured, ORT 1.31 CPU): ONNX Runtime fuses ``Q -> DQ -> MatMul`` into
    ``MatMulIntegerToFloat`` only where one Q feeds one MatMul. MatMuls behind a shared Q (ORT's quantizer shares
    it, ``DedicatedQDQPair`` or not) stay fp32 MatMuls that dequantize their weight on every call, about 10x slower
    than fp32 (docs/performance.md). The shipped mixers never share one; projections reading one tensor would."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {t.name: t for t in g.initializer}
    by_q: dict[str, list] = {}
    for n in g.node:
        dq = producer.get(n.input[0]) if n.op_type in ("MatMul", "Gemm") and n.input else None
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            by_q.setdefault(q.name, []).append((q, dq, n))
    added = 0
    for users in by_q.values():
        for i, (q, dq, mm) in enumerate(users[1:], start=1):
            q2, dq2 = onnx.NodeProto(), onnx.NodeProto()
            q2.CopyFrom(q)
            dq2.CopyFrom(dq)
            q2.name, q2.output[0] = f"{q.name}/for{i}", f"{q.output[0]}/for{i}"
            dq2.name, dq2.input[0], dq2.output[0] = f"{dq.name}/for{i}", q2.output[0], f"{dq.output[0]}/for{i}"
            # the scale and zero point copied under new names too: ORT's common-subexpression pass would merge two
            # Q nodes with the same inputs back into one
            for node in (q2, dq2):
                for k in (1, 2):
                    if k < len(node.input) and node.input[k] in inits:
                        copy = onnx.TensorProto()
                        copy.CopyFrom(inits[node.input[k]])
                        copy.name = f"{node.input[k]}/for{i}"
                        if copy.name not in inits:
                            g.initializer.append(copy)
                            inits[copy.name] = copy
                        node.input[k] = copy.name
            mm.input[0] = dq2.output[0]
            at = list(g.node).index(mm)  # right before the MatMul: the node list stays topologically sorted
            g.node.insert(at, dq2)
            g.node.insert(at, q2)
            added += 1
    return added


def quantize_dynamic_to(model_path, out_path, nodes: list[str]) -> None:
    """The CPU-only dynamic format of ``nodes`` (int8 per-channel weights, activations quantized per call). Only
    MatMul/Gemm: ORT has no dynamic kernel for the subsampling Conv (it would dequantize its weight every call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    m = onnx.load(str(model_path))
    mm = {n.name for n in m.graph.node if n.op_type in ("MatMul", "Gemm")}
    nodes = [n for n in nodes if n in mm]
    if not nodes:
        raise QuantizeError("no MatMul/Gemm selected for dynamic int8 (nothing to quantize in this graph)")
    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(str(model_path), str(out_path), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gemm"], nodes_to_quantize=nodes,
                     extra_options={"MatMulConstBOnly": True})


def recipe(method: str, calib: dict, quantized: list[str], kept: list[dict], dev: dict | None = None,
           fmt: str = "qdq") -> dict:
    base = DYNAMIC_RECIPE if fmt == "dynamic" else RECIPE
    r = dict(base, method=method, calibration=calib, nodes_quantized=len(quantized),
             nodes_kept_fp32=len(kept), quantized=quantized, kept_fp32=kept)
    if dev is not None:
        r["dev"] = dev
    return r


def finalize(qdq_path, fp32_meta_model: onnx.ModelProto, recipe_dict: dict) -> onnx.ModelProto:
    """The QDQ model with the source's metadata, ``precision=int8`` and the recipe (compact JSON string)."""
    m = onnx.load(str(qdq_path))
    del m.metadata_props[:]
    for p in fp32_meta_model.metadata_props:
        if p.key == PREFIX + "precision":
            m.metadata_props.add(key=p.key, value="int8")
        elif p.key == PREFIX + "quant_recipe":
            m.metadata_props.add(key=p.key, value=json.dumps(recipe_dict, sort_keys=True, separators=(",", ":")))
        else:
            m.metadata_props.add(key=p.key, value=p.value)
    m.graph.name = fp32_meta_model.graph.name + "_int8"
    m.doc_string = fp32_meta_model.doc_string
    return m


def write_atomic(model: onnx.ModelProto, out: Path) -> int:
    """Check, then write through a temp file in the output directory and rename; nothing is left on failure."""
    def check(tmp: str) -> None:
        onnx.checker.check_model(tmp, full_check=True)
        read_metadata(tmp)

    try:
        return atomic_write(out, model.SerializeToString(deterministic=True), check)
    except OSError as e:
        raise QuantizeError(f"{out}: cannot write ({e.strerror or e})") from None


def check_output(out: Path) -> None:
    problem = output_path_problem(out)
    if problem:
        raise QuantizeError(problem)
