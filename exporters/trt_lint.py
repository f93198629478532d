"""Static TensorRT-readiness lint for ONNX graphs; runs without TensorRT.

The ONNX-TensorRT parser's operator support lives in ``trt_ops.json`` next to this file (data, with the TensorRT
version it describes). On top of that table this module checks what the parser and edgeasr's int8 policy
(DESIGN.md §4) need: tensor element types (no float64/string, int64 at the graph boundary, quantized types only
through Q/DQ), Q/DQ zero points (int8 and all zero: TensorRT only does symmetric int8/fp8), positive constant
scales, per-channel axes on weights only (MatMul/Gemm ``[K, N]`` weights axis 1, Conv weights axis 0), no Q/DQ on
streaming state tensors (``in.*`` / ``out.*`` stay fp32), shape tensors fed by data values, and dynamic dims other
than batch/time on graph inputs.

``lint_model(model_or_path) -> list[Problem]``; errors mean the parser or builder would refuse the graph (or
edgeasr's policy forbids it), warnings mean it would load with a cast, a clamp or a performance cost.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edgeasr.runtimes.errors import UserError

OPS_FILE = Path(__file__).with_name("trt_ops.json")
STATE_IN, STATE_OUT = "in.", "out."

ERROR, WARNING = "error", "warning"
_ONNX_DOMAINS = ("", "ai.onnx")
_FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16}
# Q/DQ element types TensorRT accepts. edgeasr ships int8 only; the others load but are outside the policy.
_QDQ_OK = {TensorProto.INT8}
_QDQ_OTHER_TRT = {TensorProto.FLOAT8E4M3FN, TensorProto.INT4}
if hasattr(TensorProto, "FLOAT4E2M1"):
    _QDQ_OTHER_TRT.add(TensorProto.FLOAT4E2M1)
_SHAPE_ONLY_OPS = {"Shape", "Size"}  # outputs depend on shapes only, never on values


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" | "warning"
    node: str  # node name (or "<OpType#index>" when the node has none; "(model)" for model-level problems)
    op_type: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=1)
def load_op_table() -> dict:
    """The parsed trt_ops.json."""
    with open(OPS_FILE) as f:
        return json.load(f)


def _dtype_name(t: int) -> str:
    try:
        return TensorProto.DataType.Name(t)
    except ValueError:
        return f"type {t}"


def _ver(s: str) -> tuple[int, ...]:
    return tuple(int(p) for p in str(s).split(".") if p.isdigit())


def load_model(model_or_path) -> onnx.ModelProto:
    """A ModelProto from a ModelProto or a path; missing or unreadable files raise a one-line UserError."""
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    path = Path(model_or_path)
    if not path.is_file():
        raise UserError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError, missing external data, ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable ONNX model ({msg})") from None
    if model.ir_version == 0 or not model.HasField("graph") or not model.opset_import:
        raise UserError(f"{path}: not a readable ONNX model (no graph or opset)")
    return model


# ----------------------------------------------------------------------------------------------------------------
# Graph index


class _Index:
    """Every node (subgraphs and local functions included), every tensor's dtype/shape, producers, consumers."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.opsets = {imp.domain: imp.version for imp in model.opset_import}
        self.onnx_opset = self.opsets.get("", self.opsets.get("ai.onnx", 0))
        self.functions = {(f.domain, f.name): f for f in model.functions}
        self.dtypes: dict[str, int] = {}
        self.shapes: dict[str, list | None] = {}
        self.consts: dict[str, np.ndarray | None] = {}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        self.nodes: list[tuple[onnx.NodeProto, str]] = []  # (node, display name)
        self._names: dict[int, str] = {}
        self.graph_inputs = [i.name for i in self.graph.input]
        self.graph_outputs = {o.name for o in self.graph.output}
        init_names = {t.name for t in self.graph.initializer}
        self.runtime_inputs = [n for n in self.graph_inputs if n not in init_names]
        self._walk_graph(self.graph, prefix="")
        for (dom, name), fn in self.functions.items():
            for node in fn.node:
                self._add_node(node, prefix=f"{name}/")

    def _add_value_info(self, vi: onnx.ValueInfoProto):
        if not vi.type.HasField("tensor_type"):
            return
        tt = vi.type.tensor_type
        if tt.elem_type:
            self.dtypes[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                    for d in tt.shape.dim]
        else:
            self.shapes.setdefault(vi.name, None)

    def _walk_graph(self, g: onnx.GraphProto, prefix: str):
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            self._add_value_info(vi)
        for t in g.initializer:
            self.dtypes[t.name] = t.data_type
            self.shapes[t.name] = list(t.dims)
            self.consts[t.name] = _to_array(t)
        for node in g.node:
            self._add_node(node, prefix)

    def _add_node(self, node: onnx.NodeProto, prefix: str):
        name = prefix + (node.name or f"<{node.op_type}#{len(self.nodes)}>")
        self.nodes.append((node, name))
        self._names[id(node)] = name
        for i, inp in enumerate(node.input):
            if inp:
                self.consumers.setdefault(inp, []).append((node, i))
        for out in node.output:
            if out:
                self.producer[out] = node
        if node.op_type == "Constant" and node.domain in _ONNX_DOMAINS and node.output:
            value = _constant_value(node)
            self.consts[node.output[0]] = value
            if value is not None and node.output[0] not in self.dtypes:
                t = next((a.t for a in node.attribute if a.name == "value"), None)
                if t is not None:
                    self.dtypes[node.output[0]] = t.data_type
                    self.shapes[node.output[0]] = list(t.dims)
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                self._walk_graph(a.g, prefix=f"{name}/")
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    self._walk_graph(sub, prefix=f"{name}/")

    # helpers
    def is_const(self, name: str) -> bool:
        return name in self.consts

    def value(self, name: str):
        return self.consts.get(name)

    def rank(self, name: str) -> int | None:
        s = self.shapes.get(name)
        return None if s is None else len(s)

    def used(self, name: str) -> bool:
        return bool(name) and (name in self.consumers or name in self.graph_outputs)

    def name_of(self, node: onnx.NodeProto) -> str:
        return self._names.get(id(node), node.name or node.op_type)


def _to_array(t: TensorProto):
    try:
        return numpy_helper.to_array(t)
    except Exception:  # external data not loaded, exotic types
        return None


def _constant_value(node: onnx.NodeProto):
    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            return _to_array(a.t)
        if a.name in ("value_float", "value_int"):
            return np.array(onnx.helper.get_attribute_value(a))
        if a.name in ("value_floats", "value_ints"):
            return np.array(list(onnx.helper.get_attribute_value(a)))
    return None


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _has_attr(node: onnx.NodeProto, name: str) -> bool:
    return any(a.name == name for a in node.attribute)


def _infer(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True), None
    except Exception as e:
        return model, str(e).splitlines()[0] if str(e) else type(e).__name__


# ----------------------------------------------------------------------------------------------------------------
# The lint


def lint_model(model_or_path, trt_version: str | None = None) -> list[Problem]:
    """Every TensorRT-readiness problem of an ONNX model, errors first.

    ``trt_version`` is the TensorRT release the engine will be built with (default: the table's baseline,
    10.12); ops the parser only imports in later releases are errors.
    """
    model = load_model(model_or_path)
    table = load_op_table()
    target = trt_version or table["baseline_trt_version"]
    inferred, infer_error = _infer(model)
    ix = _Index(inferred)
    problems: list[Problem] = []
    add = problems.append
    if infer_error:
        add(Problem(WARNING, "(model)", "", f"ONNX shape inference failed ({infer_error}); dtype checks are partial"))

    _check_opsets(ix, table, add)
    for node, name in ix.nodes:
        _check_node(ix, table, target, node, name, add)
    _check_tensor_types(ix, table, add)
    _check_qdq(ix, add)
    _check_states(ix, add)
    _check_dynamic_inputs(ix, add)
    order = {ERROR: 0, WARNING: 1}
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: order[p.severity])


def _check_opsets(ix: _Index, table: dict, add):
    v = ix.onnx_opset
    lo, hi = table["opset_min"], table["opset_max"]
    if not v:
        add(Problem(ERROR, "(model)", "", "the model imports no ai.onnx opset"))
    elif not lo <= v <= hi:
        add(Problem(ERROR, "(model)", "", f"ai.onnx opset {v} is outside the range TensorRT "
                                           f"{table['trt_version']} imports ({lo}..{hi})"))


def _check_node(ix: _Index, table: dict, target: str, node: onnx.NodeProto, name: str, add):
    op = node.op_type
    ver = table["trt_version"]
    if node.domain not in _ONNX_DOMAINS:
        if (node.domain, op) in ix.functions:
            return  # a model-local function: its body nodes are linted on their own
        add(Problem(ERROR, name, op, f"custom-domain op '{node.domain}::{op}' is not an ONNX operator; TensorRT can "
                                     "only import it through a plugin registered under that name"))
        return
    spec = table["ops"].get(op)
    if spec is None:
        add(Problem(ERROR, name, op, f"{op} is not in the ONNX-TensorRT operator table (TensorRT {ver})"))
        return
    if not spec["supported"]:
        extra = f": {spec['restrictions']}" if spec.get("restrictions") else ""
        add(Problem(ERROR, name, op, f"{op} is not supported by the ONNX-TensorRT parser (TensorRT {ver}){extra}"))
        return
    since = spec.get("since_trt")
    if since and _ver(since) > _ver(target):
        add(Problem(ERROR, name, op, f"{op} is imported only since TensorRT {since} (target {target})"))
    inputs = list(node.input)

    def inp(i):
        return inputs[i] if i < len(inputs) and inputs[i] else None

    # the main data tensor's type (Q/DQ have their own rules; float64/string/uint8/int8 are reported per tensor)
    tc = spec.get("type_check", "input0")
    if tc != "none" and "types" in spec and op not in ("QuantizeLinear", "DequantizeLinear"):
        tensor = inp(int(tc[-1])) if tc.startswith("input") else (node.output[0] if node.output else None)
        dt = ix.dtypes.get(tensor) if tensor else None
        allowed = spec["types"]
        generic = {TensorProto.DOUBLE, TensorProto.STRING, TensorProto.UINT8, TensorProto.INT8}
        if dt and dt not in generic and _dtype_name(dt) not in allowed:
            sev = WARNING if dt == TensorProto.INT64 and "INT32" in allowed else ERROR
            hint = " (TensorRT would have to narrow it to INT32)" if sev == WARNING else ""
            add(Problem(sev, name, op, f"{op} on {_dtype_name(dt)} tensor '{tensor}' is not supported by TensorRT "
                                       f"(accepts {', '.join(allowed)}){hint}"))
    for attr, rule in spec.get("attrs", {}).items():
        present = _has_attr(node, attr)
        value = _attr(node, attr)
        if present and rule.get("dtype"):
            value = _dtype_name(value)
        if rule.get("forbidden") and present:
            add(Problem(ERROR, name, op, f"attribute '{attr}' is not supported by TensorRT"))
        if present and "allowed" in rule and value not in rule["allowed"]:
            add(Problem(ERROR, name, op, f"{attr}={value!r} is not supported by TensorRT "
                                         f"(allowed: {', '.join(map(str, rule['allowed']))})"))
        if present and rule.get("all_ones") and any(v != 1 for v in value):
            add(Problem(ERROR, name, op, f"{attr}={list(value)}: TensorRT needs it empty or all ones"))
        if present and rule.get("symmetric") and len(value) % 2 == 0:
            h = len(value) // 2
            if list(value[:h]) != list(value[h:]):
                add(Problem(ERROR, name, op, f"{attr}={list(value)}: TensorRT needs equal begin and end pads"))
    for i in spec.get("const_inputs", []):
        t = inp(i)
        if t and not ix.is_const(t):
            add(Problem(ERROR, name, op, f"input {i} ('{t}') must be a build-time constant (initializer or "
                                         "Constant) for TensorRT"))
    for i in spec.get("const_false_inputs", []):
        t = inp(i)
        if t and ix.value(t) is not None and bool(np.any(ix.value(t))):
            add(Problem(ERROR, name, op, f"input {i} ('{t}') must be False for TensorRT (inference only)"))
    for i, hi in spec.get("const_max_inputs", {}).items():
        t = inp(int(i))
        val = ix.value(t) if t else None
        if val is not None and val.size and int(np.max(val)) > hi:
            add(Problem(ERROR, name, op, f"input {i} ('{t}') = {int(np.max(val))} exceeds TensorRT's limit {hi}"))
    for i in spec.get("unsupported_inputs", []):
        if inp(i):
            add(Problem(ERROR, name, op, f"optional input {i} ('{inp(i)}') is not supported by TensorRT"))
    for i in spec.get("unsupported_outputs", []):
        if i < len(node.output) and node.output[i]:
            t = node.output[i]
            if ix.used(t):
                add(Problem(ERROR, name, op, f"output {i} ('{t}') is not supported by TensorRT"))
            else:
                add(Problem(WARNING, name, op, f"unused output {i} ('{t}') is not supported by TensorRT; drop it"))
    for i, ranks in spec.get("input_ranks", {}).items():
        t = inp(int(i))
        r = ix.rank(t) if t else None
        if r is not None and r not in ranks:
            sev = spec.get("rank_severity", ERROR)
            add(Problem(sev, name, op, f"input {i} ('{t}') has rank {r}; TensorRT supports rank "
                                       f"{' or '.join(map(str, ranks))} here"))
    for i, types in spec.get("input_dtypes", {}).items():
        t = inp(int(i))
        dt = ix.dtypes.get(t) if t else None
        if dt and _dtype_name(dt) not in types:
            add(Problem(ERROR, name, op, f"input {i} ('{t}') is {_dtype_name(dt)}; TensorRT needs "
                                         f"{' or '.join(types)}"))
    for i in spec.get("static_inputs", []):
        t = inp(i)
        s = ix.shapes.get(t) if t else None
        if s is not None and any(not isinstance(d, int) or d <= 0 for d in s):
            add(Problem(ERROR, name, op, f"input {i} ('{t}') must have static dimensions for TensorRT"))
    if spec.get("bidir_same_activations") and _attr(node, "direction", "forward") == "bidirectional":
        acts = [a.decode() if isinstance(a, bytes) else a for a in (_attr(node, "activations") or [])]
        h = len(acts) // 2
        if acts and acts[:h] != acts[h:]:
            add(Problem(ERROR, name, op, f"bidirectional {op} with different forward/reverse activations {acts}"))
    for i in spec.get("shape_inputs", []):
        t = inp(i)
        if t and not ix.is_const(t):
            src = _value_source(ix, t)
            if src:
                add(Problem(WARNING, name, op, f"input {i} ('{t}') is a shape tensor for TensorRT but its value "
                                               f"is computed from the values of graph input '{src}', which would "
                                               "make that input a host shape tensor; derive it from Shape instead"))


def _value_source(ix: _Index, tensor: str) -> str | None:
    """The runtime graph input whose *values* (not just shape) flow into ``tensor``, if any."""
    seen: set[str] = set()
    stack = [tensor]
    runtime = set(ix.runtime_inputs)
    while stack:
        t = stack.pop()
        if t in seen or ix.is_const(t):
            continue
        seen.add(t)
        if t in runtime:
            return t
        node = ix.producer.get(t)
        if node is None or node.op_type in _SHAPE_ONLY_OPS:
            continue
        stack.extend(i for i in node.input if i)
    return None


def _site(ix: _Index, tensor: str) -> tuple[str, str]:
    """(node name, op type) to report a tensor-level problem at: its producer, else its first consumer."""
    node = ix.producer.get(tensor)
    if node is None and ix.consumers.get(tensor):
        node = ix.consumers[tensor][0][0]
    if node is None:
        return f"(tensor {tensor})", ""
    return ix.name_of(node), node.op_type


def _check_tensor_types(ix: _Index, table: dict, add):
    trt_types = set(table["tensor_types"])
    boundary = set(ix.runtime_inputs) | ix.graph_outputs
    for tensor, dt in ix.dtypes.items():
        if not ix.used(tensor) and tensor not in ix.producer and tensor not in boundary:
            continue  # dangling initializer / value_info
        name, op = _site(ix, tensor)
        dn = _dtype_name(dt)
        producer = ix.producer.get(tensor)
        consumers = [n.op_type for n, _ in ix.consumers.get(tensor, [])]
        if dt == TensorProto.STRING:
            add(Problem(ERROR, name, op, f"tensor '{tensor}' is STRING; TensorRT has no string tensors"))
        elif dt == TensorProto.DOUBLE:
            add(Problem(ERROR, name, op, f"tensor '{tensor}' is DOUBLE (float64); TensorRT would cast it to FLOAT "
                                         "with clamping: export float32"))
        elif dt == TensorProto.INT64 and tensor in boundary:
            add(Problem(WARNING, name, op, f"graph {'input' if tensor in ix.runtime_inputs else 'output'} "
                                           f"'{tensor}' is INT64: TensorRT 10 binds it natively, TensorRT 8.x "
                                           "casts INT64 I/O and weights to INT32 with a warning (clamping)"))
        elif dt == TensorProto.UINT8:
            qdq = (producer is not None and producer.op_type == "QuantizeLinear") or "DequantizeLinear" in consumers
            if tensor not in boundary and not qdq:
                add(Problem(ERROR, name, op, f"tensor '{tensor}' is UINT8, which TensorRT only allows as a network "
                                             "input or output"))
        elif dn in table["quantized_types"] or dt in _QDQ_OTHER_TRT:
            qdq = (producer is not None and producer.op_type == "QuantizeLinear") or (
                consumers and all(c == "DequantizeLinear" for c in consumers))
            zero_point = all(n.op_type in ("QuantizeLinear", "DequantizeLinear") and i == 2
                             for n, i in ix.consumers.get(tensor, []))
            if not qdq and not (zero_point and consumers):
                add(Problem(ERROR, name, op, f"tensor '{tensor}' is {dn}; TensorRT only has {dn} through "
                                             "QuantizeLinear/DequantizeLinear"))
        elif dn not in trt_types and dt != TensorProto.UNDEFINED:
            add(Problem(ERROR, name, op, f"tensor '{tensor}' is {dn}, not a TensorRT type"))


def _check_scale(ix: _Index, node, name, add) -> np.ndarray | None:
    op = node.op_type
    s = node.input[1] if len(node.input) > 1 else ""
    if not s:
        add(Problem(ERROR, name, op, "missing scale input"))
        return None
    if not ix.is_const(s):
        add(Problem(ERROR, name, op, f"scale '{s}' is not a constant; TensorRT needs build-time Q/DQ scales"))
        return None
    val = ix.value(s)
    if val is None:
        return None
    if ix.dtypes.get(s) not in _FLOATS:
        add(Problem(ERROR, name, op, f"scale '{s}' is {_dtype_name(ix.dtypes.get(s, 0))}; TensorRT needs a "
                                     "float scale"))
    v = np.asarray(val, dtype=np.float64)
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        add(Problem(ERROR, name, op, f"scale '{s}' has non-positive or non-finite values (min {v.min():g})"))
    return v


def _check_qdq(ix: _Index, add):
    opset = ix.onnx_opset
    for node, name in ix.nodes:
        op = node.op_type
        if op not in ("QuantizeLinear", "DequantizeLinear") or node.domain not in _ONNX_DOMAINS:
            continue
        scale = _check_scale(ix, node, name, add)
        zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
        x = node.input[0]
        # the quantized-side type
        if op == "QuantizeLinear":
            if zp:
                qtype = ix.dtypes.get(zp)
            elif _attr(node, "output_dtype", 0):
                qtype = _attr(node, "output_dtype")
            else:
                qtype = TensorProto.UINT8  # ONNX default without zero point
        else:
            qtype = ix.dtypes.get(x) or (ix.dtypes.get(zp) if zp else None)
        qn = _dtype_name(qtype) if qtype else "unknown"
        if qtype == TensorProto.UINT8:
            why = "" if zp else " (QuantizeLinear without a zero point defaults to uint8)"
            add(Problem(ERROR, name, op, f"UINT8 quantization{why}: TensorRT only supports symmetric signed int8 "
                                         "(or fp8) Q/DQ on GPU; quantize with QInt8 activations and weights"))
        elif qtype == TensorProto.INT32 and op == "DequantizeLinear":
            add(Problem(ERROR, name, op, f"INT32 DequantizeLinear of '{x}' (an ORT-quantized bias?) is not supported "
                                         "by TensorRT; quantize with extra_options={'QuantizeBias': False}"))
            continue
        elif qtype in _QDQ_OTHER_TRT:
            add(Problem(WARNING, name, op, f"{qn} Q/DQ loads in TensorRT but edgeasr's policy is int8 "
                                           "(DESIGN.md §4)"))
        elif qtype is not None and qtype not in _QDQ_OK:
            add(Problem(ERROR, name, op, f"{qn} Q/DQ is not supported by TensorRT (int8/fp8 only)"))
        if zp:
            if not ix.is_const(zp):
                add(Problem(ERROR, name, op, f"zero point '{zp}' is not a constant"))
            else:
                val = ix.value(zp)
                if val is not None and np.any(np.asarray(val, dtype=np.float64) != 0):
                    add(Problem(ERROR, name, op, f"zero point '{zp}' is not all zero (asymmetric quantization); "
                                                 "TensorRT needs zero points of 0 (ActivationSymmetric/"
                                                 "WeightSymmetric=True)"))
        block = _attr(node, "block_size", 0)
        if block:
            add(Problem(WARNING, name, op, f"block quantization (block_size={block}): TensorRT supports it for "
                                           "INT4/FP4 weight-only DQ; edgeasr uses per-channel int8"))
        if scale is None or scale.ndim == 0 or scale.size == 1 or block:
            continue
        # per-axis quantization
        if opset < 13:
            add(Problem(ERROR, name, op, f"per-channel Q/DQ needs opset >= 13 (model has {opset})"))
            continue
        rank = ix.rank(x)
        axis = _attr(node, "axis", 1)
        if rank is not None:
            if not -rank <= axis < rank:
                add(Problem(ERROR, name, op, f"axis {axis} is out of range for '{x}' of rank {rank}"))
                continue
            axis %= rank
            dim = ix.shapes[x][axis]
            if isinstance(dim, int) and dim > 0 and dim != scale.size:
                add(Problem(ERROR, name, op, f"{scale.size} per-channel scales but '{x}' has {dim} channels on "
                                             f"axis {axis}"))
        if not ix.is_const(x):
            add(Problem(ERROR, name, op, f"per-channel scales on activation '{x}': TensorRT only supports "
                                         "per-channel quantization of constant weights (activations per-tensor)"))
            continue
        out = node.output[0]
        if op == "QuantizeLinear":  # constant weight -> Q -> DQ -> consumer
            dqs = [n for n, _ in ix.consumers.get(out, []) if n.op_type == "DequantizeLinear"]
            out = dqs[0].output[0] if dqs else out
        for consumer, idx in ix.consumers.get(out, []):
            want = _weight_axis(consumer, idx, rank)
            cname = ix.name_of(consumer)
            if want is None:
                add(Problem(WARNING, name, op, f"per-channel weight '{x}' feeds {consumer.op_type} '{cname}' input "
                                               f"{idx}; cannot check its axis"))
            elif rank is not None and axis != want:
                add(Problem(ERROR, name, op, f"per-channel axis {axis} is wrong for {consumer.op_type} '{cname}' "
                                             f"weight '{x}' of rank {rank}: TensorRT needs axis {want} (the output "
                                             "channels)"))


def _weight_axis(consumer: onnx.NodeProto, idx: int, rank: int | None) -> int | None:
    """The output-channel axis TensorRT needs for a per-channel weight at input ``idx`` of ``consumer``."""
    op = consumer.op_type
    if op == "Conv" and idx == 1:
        return 0
    if op == "ConvTranspose" and idx == 1:
        return 1
    if op == "MatMul" and idx == 1 and rank is not None:
        return rank - 1  # [K, N]: axis 1
    if op == "Gemm" and idx == 1:
        return 0 if _attr(consumer, "transB", 0) else 1
    return None


def _check_states(ix: _Index, add):
    for t in ix.runtime_inputs:
        if t.startswith(STATE_IN):
            for node, _ in ix.consumers.get(t, []):
                if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                    add(Problem(ERROR, ix.name_of(node), node.op_type,
                                f"state input '{t}' is quantized: edgeasr keeps every state fp32 (DESIGN.md §4)"))
    for t in ix.graph_outputs:
        if not t.startswith(STATE_OUT):
            continue
        prod = ix.producer.get(t)
        if prod is not None and prod.op_type in ("QuantizeLinear", "DequantizeLinear"):
            add(Problem(ERROR, ix.name_of(prod), prod.op_type,
                        f"state output '{t}' comes out of Q/DQ: edgeasr keeps every state fp32 (DESIGN.md §4)"))
        for node, _ in ix.consumers.get(t, []):
            if node.op_type == "QuantizeLinear":
                add(Problem(ERROR, ix.name_of(node), node.op_type,
                            f"state output '{t}' is quantized: edgeasr keeps every state fp32 (DESIGN.md §4)"))


def _check_dynamic_inputs(ix: _Index, add):
    for t in ix.runtime_inputs:
        shape = ix.shapes.get(t)
        where = f"graph input {t}"
        if shape is None:
            add(Problem(WARNING, where, "", f"input '{t}' has no shape: TensorRT optimization profiles need its "
                                            "rank"))
            continue
        allowed = {0} if t.startswith(STATE_IN) else {0, 1}  # batch (states) / batch and time (x, x_lens)
        extra = [i for i, d in enumerate(shape) if not (isinstance(d, int) and d > 0) and i not in allowed]
        if extra:
            what = "state inputs should only have a dynamic batch axis" if t.startswith(STATE_IN) else \
                "only batch (axis 0) and time (axis 1) should be dynamic"
            add(Problem(WARNING, where, "", f"input '{t}' {shape} has dynamic axes {extra}: {what}; every dynamic "
                                            "axis needs min/opt/max in the TensorRT optimization profile"))


def summarize(problems: list[Problem]) -> tuple[int, int]:
    """(errors, warnings)."""
    e = sum(p.severity == ERROR for p in problems)
    return e, len(problems) - e
