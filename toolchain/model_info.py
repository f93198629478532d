"""What an exported model promises, as plain data (``edgeasr inspect``): metadata, graph I/O, opset, op histogram.

Graph inputs and outputs come from onnxruntime, so a device install (no ``onnx``) can inspect a model; the opset
and op histogram need the graph itself and are None without the ``onnx`` package."""
from __future__ import annotations

from pathlib import Path

from edgeasr.runtimes.metadata import graph_problems, metadata_from_session, open_unoptimized, session_io

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
              "tensor(bool)": "bool"}


def describe(path: Path) -> dict:
    path = Path(path)
    sess = open_unoptimized(path)
    # foreign files: a one-line MetadataError; a graph that contradicts its metadata is shown, as warnings,
    # since inspecting such a file is how one finds out what is wrong with it
    meta = metadata_from_session(sess, str(path), validate=False)

    def io(v):
        return {"name": v.name, "dtype": _ORT_TYPES.get(v.type, v.type),
                "shape": [d if d is not None else "?" for d in v.shape]}

    opset, hist = _graph_ops(path)
    return {
        "file": str(path),
        "size_bytes": path.stat().st_size,
        "graph_kind": meta["graph_kind"],
        "opset": opset,
        "inputs": [io(v) for v in sess.get_inputs()],
        "outputs": [io(v) for v in sess.get_outputs()],
        "metadata": meta,
        "op_count": sum(hist.values()) if hist is not None else None,
        "op_histogram": hist,
        "warnings": [f"{path}: {p}" for p in graph_problems(meta, session_io(sess))],
    }


def _graph_ops(path: Path) -> tuple[dict, dict | None]:
    try:
        import onnx
    except ImportError:
        return {}, None
    model = onnx.load(str(path), load_external_data=False)
    hist: dict[str, int] = {}
    for n in model.graph.node:
        hist[n.op_type] = hist.get(n.op_type, 0) + 1
    opset = {d.domain or "ai.onnx": d.version for d in model.opset_import}
    return opset, dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))
