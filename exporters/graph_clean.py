"""Graph hygiene for exported encoders (DESIGN.md §3): onnx-graphsurgeon fold/cleanup/toposort, shape inference,
the full checker, and the forbidden-construct scan (GroupNormalization, DeformConv, -inf constants, and CumSum in
step graphs)."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import numpy_helper

FORBIDDEN_OPS = {
    "GroupNormalization": "spec bug before opset 21: use reshape + LayerNormalization",
    "DeformConv": "partial ORT/OpenVINO support: deformable sampling must be Gather + linear interpolation",
}
FORBIDDEN_IN_STEP = {"CumSum": "step graphs use triangular matmuls for segment sums"}


class GraphError(ValueError):
    """A graph that breaks the ONNX contract; the message lists each problem."""


def clean(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants, drop dead nodes, sort topologically, infer shapes."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph.fold_constants()
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph, do_type_check=True)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    out.producer_name, out.producer_version = model.producer_name, model.producer_version
    return onnx.shape_inference.infer_shapes(out, strict_mode=True, data_prop=True)


def _constant_arrays(model: onnx.ModelProto):
    for init in model.graph.initializer:
        yield init.name, init
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    yield node.name or node.output[0], a.t


def forbidden(model: onnx.ModelProto, kind: str) -> list[str]:
    """Problems as lines naming the node or constant; empty when the graph is clean."""
    problems = []
    rules = dict(FORBIDDEN_OPS, **(FORBIDDEN_IN_STEP if kind == "step" else {}))
    for node in model.graph.node:
        if node.op_type in rules:
            problems.append(f"{node.op_type} node {node.name!r}: {rules[node.op_type]}")
    for name, tensor in _constant_arrays(model):
        if tensor.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
            arr = numpy_helper.to_array(tensor)
            if np.isneginf(arr).any():
                problems.append(f"constant {name!r} holds -inf: masks must use large finite negatives")
            if np.isnan(arr).any():
                problems.append(f"constant {name!r} holds NaN")
    return problems


def check(model: onnx.ModelProto, kind: str) -> None:
    onnx.checker.check_model(model, full_check=True)
    problems = forbidden(model, kind)
    if problems:
        raise GraphError("graph breaks the ONNX contract: " + "; ".join(problems))


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    hist: dict[str, int] = {}
    for node in model.graph.node:
        hist[node.op_type] = hist.get(node.op_type, 0) + 1
    return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))
