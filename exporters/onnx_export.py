"""Export an ``Encoder`` to ONNX (opset 17, TorchScript exporter): ``full``, ``step`` or ``chunk`` graphs that carry
the metadata contract of DESIGN.md §3 (``runtimes.metadata``).

Pipeline: trace (``torch.onnx.export(..., dynamo=False)``) -> clean (graphsurgeon fold/cleanup/toposort, shape
inference) -> metadata -> checker + forbidden-construct scan -> verification against torch on ONNX Runtime
(``exporters.verify``; the one place exporters use onnxruntime) -> temp file next to the output, renamed into
place only when every check passed. Same checkpoint and options give byte-identical files.
"""
from __future__ import annotations

import contextlib
import io
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from edgeasr.exporters import graph_clean, verify as verify_mod, wrappers
from edgeasr.models.config import CHUNK_BI, DIRECTIONS as MODEL_DIRECTIONS
from edgeasr.models.conformer import Encoder
from edgeasr.models.mixers.chunk_scan import grouped_hand_over, shared_step_masks
from edgeasr.runtimes.features import FbankOptions
from edgeasr.runtimes.files import atomic_write, output_path_problem
from edgeasr.runtimes.metadata import (FORMAT_VERSION, STATE_INPUT_PREFIX, STATE_OUTPUT_PREFIX, encode_metadata)

OPSET = 17
KINDS = ("full", "step", "chunk")
DIRECTIONS = (*MODEL_DIRECTIONS, CHUNK_BI)
STREAMABLE = ("l2r", CHUNK_BI)  # directions a step graph can run
SUBSAMPLING = 4


class ExportError(ValueError):
    """An export that cannot or must not be written; the message is one line for the user."""


@dataclass
class ExportResult:
    path: Path
    kind: str
    direction: str
    size_bytes: int
    op_count: int
    op_histogram: dict[str, int]
    seconds: float
    verify: verify_mod.VerifyReport | None = None
    warnings: list[str] = field(default_factory=list)


def check_options(encoder: Encoder, config: dict, kind: str, direction: str, chunk_frames: int,
                  opset: int, lookahead_frames: int = 0) -> list[str]:
    """Refusals as ExportError; returns warnings (e.g. an L2R export of a model trained without DirDrop)."""
    if opset != OPSET:
        raise ExportError(f"unsupported opset {opset}: edgeasr exports opset {OPSET} only")
    if kind not in KINDS:
        raise ExportError(f"unknown graph kind {kind!r}; choose {', '.join(KINDS)}")
    if direction not in DIRECTIONS:
        raise ExportError(f"unknown direction {direction!r}; choose {', '.join(DIRECTIONS)}")
    if kind == "step" and direction not in STREAMABLE:
        raise ExportError(f"cannot export direction {direction!r} as a step graph: R2L needs the future and "
                          f"cannot stream; use --direction l2r or {CHUNK_BI}, or --kind full/chunk")
    if kind == "chunk" and direction == CHUNK_BI:
        raise ExportError(f"direction {CHUNK_BI!r} exports as --kind step or full (a chunk graph has no L2R state)")
    if kind == "step" and not encoder.cfg.causal:
        raise ExportError("cannot export a step graph: this model is not stream-capable (trained with causal=False)")
    if chunk_frames < 4 or chunk_frames % 4:
        raise ExportError(f"--chunk-frames must be a positive multiple of 4 fbank frames, got {chunk_frames}")
    if lookahead_frames and (kind != "step" or direction != CHUNK_BI):
        raise ExportError(f"a look-ahead is part of a {CHUNK_BI} step graph (each call also reads the next "
                          f"chunk's first frames): use --kind step --direction {CHUNK_BI}")
    if lookahead_frames < 0 or lookahead_frames % 4:
        raise ExportError(f"--lookahead-frames must be a non-negative multiple of 4 fbank frames, got "
                          f"{lookahead_frames}")
    try:  # chunk-bi: the chunk is part of the model's computation, not only a recommendation
        encoder.set_direction(direction, chunk_frames if direction == CHUNK_BI else None,
                              lookahead_frames if direction == CHUNK_BI else None)
    except ValueError as e:
        raise ExportError(str(e)) from None
    notes = []
    model_cfg = config.get("model", {})
    if direction == "l2r" and encoder.bidirectional and model_cfg.get("direction", "bi") != "l2r" \
            and model_cfg.get("dirdrop", "none") == "none":
        notes.append("this bidirectional model was trained without DirDrop (dirdrop 'none'): its L2R-only "
                     "(streaming) accuracy will drop; train with --dirdrop r2l or both for streaming")
    return notes


def _trace_inputs(encoder: Encoder, kind: str) -> tuple:
    g = torch.Generator().manual_seed(0)
    F = encoder.cfg.n_mels
    if kind == "full":
        return torch.randn(2, 4 * 9 + 2, F, generator=g), torch.tensor([4 * 9 + 2, 4 * 5 + 1], dtype=torch.int64)
    if kind == "chunk":
        return (torch.randn(2, 4 * 6, F, generator=g),)
    state = encoder.initial_state(2)
    return (torch.randn(2, 4 * 5, F, generator=g), *[state[s.name] for s in encoder.state_specs()])


def metadata(encoder: Encoder, config: dict, kind: str, direction: str, chunk_frames: int, source_sha256: str,
             wrapper, lookahead_frames: int = 0) -> dict:
    specs = encoder.state_specs() if kind == "step" else []
    # every fbank option spelled out (defaults included): clients must not guess the training features
    feats = FbankOptions.from_dict(config.get("features", {})).to_dict()
    return {
        "format_version": FORMAT_VERSION,
        "graph_kind": kind,
        "mixer": encoder.cfg.mixer,
        "direction": direction,
        "dirdrop": encoder.cfg.dirdrop,
        "precision": "fp32",
        "quant_recipe": "none",
        "sample_rate": int(feats.get("sample_rate", 16000)),
        "fbank": feats,
        "subsampling": SUBSAMPLING,
        "chunk_multiple": SUBSAMPLING,
        "chunk_frames": int(chunk_frames),
        "lookahead_frames": int(lookahead_frames),
        "vocab": list(config.get("vocab", [])),
        "blank_id": int(config.get("blank_id", 0)),
        "states": [{"name": s.name, "shape": list(s.shape), "dtype": str(s.dtype).replace("torch.", ""),
                    "init": float(s.init)} for s in specs],
        "inputs": list(wrapper.input_names),
        "outputs": list(wrapper.output_names),
        "state_input_prefix": STATE_INPUT_PREFIX,
        "state_output_prefix": STATE_OUTPUT_PREFIX,
        "source_sha256": source_sha256,
        "opset": OPSET,
    }


def _declare_state_shapes(model: onnx.ModelProto, encoder: Encoder) -> None:
    """State outputs get the exact declared shape ``[batch, *spec.shape]`` of their inputs (shape inference
    leaves some as symbolic Slice lengths; runtimes such as TensorRT need fixed state shapes)."""
    specs = {STATE_OUTPUT_PREFIX + s.name: s for s in encoder.state_specs()}
    for out in model.graph.output:
        spec = specs.get(out.name)
        if spec is None:
            continue
        shape = out.type.tensor_type.shape
        del shape.dim[:]
        shape.dim.add().dim_param = "batch"
        for n in spec.shape:
            shape.dim.add().dim_value = int(n)


@torch.no_grad()
def build_onnx(encoder: Encoder, config: dict, kind: str, direction: str, chunk_frames: int = 32,
               opset: int = OPSET, source_sha256: str = "",
               lookahead_frames: int = 0) -> tuple[onnx.ModelProto, list[str]]:
    """Trace, clean, annotate and check; returns (model, warnings). Raises ExportError / GraphError."""
    notes = check_options(encoder, config, kind, direction, chunk_frames, opset, lookahead_frames)
    encoder.eval()
    wrapper = wrappers.build(kind, encoder)
    if kind == "step" and any(s.dtype != torch.float32 for s in encoder.state_specs()):
        raise ExportError("every state must be float32 (DESIGN.md §3)")
    buf = io.BytesIO()
    # a full graph meets inputs of any length: trace the recurrent mixers' two-level chunk-state hand-over, which
    # keeps long files near-linear (models/mixers/chunk_scan.py); step and chunk graphs see a few chunks at a time.
    # A step graph's layers all see one length: their one-block recurrences share one set of masks
    grouping = grouped_hand_over() if kind == "full" else shared_step_masks() if kind == "step" \
        else contextlib.nullcontext()
    with warnings.catch_warnings(), grouping:
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, _trace_inputs(encoder, kind), buf, dynamo=False, opset_version=opset,
                          input_names=wrapper.input_names, output_names=wrapper.output_names,
                          dynamic_axes=wrappers.dynamic_axes(kind, wrapper), do_constant_folding=True)
    model = graph_clean.clean(onnx.load_from_string(buf.getvalue()))
    if kind == "step":
        _declare_state_shapes(model, encoder)
    model.graph.name = f"edgeasr_{encoder.cfg.mixer}_{kind}_{direction}"
    model.doc_string = "edgeasr encoder; see metadata_props edgeasr.*"
    for k, v in encode_metadata(metadata(encoder, config, kind, direction, chunk_frames, source_sha256,
                                         wrapper, lookahead_frames)).items():
        model.metadata_props.add(key=k, value=v)
    graph_clean.check(model, kind)
    return model, notes


def export(encoder: Encoder, config: dict, out: Path, kind: str, direction: str = "l2r", chunk_frames: int = 32,
           opset: int = OPSET, verify: bool = True, tolerance: float = 1e-4, source_sha256: str = "",
           wav: str | Path | None = None, lookahead_frames: int = 0) -> ExportResult:
    """Export, verify, then atomically write ``out``. Nothing is left at ``out`` (or beside it) on failure."""
    t0 = time.perf_counter()
    out = Path(out)
    problem = output_path_problem(out)
    if problem:
        raise ExportError(problem)
    model, notes = build_onnx(encoder, config, kind, direction, chunk_frames, opset, source_sha256, lookahead_frames)
    data = model.SerializeToString(deterministic=True)
    report = None
    if verify:
        report = verify_mod.verify(data, encoder, kind, chunk_frames, config.get("features", {}), wav)
        bad = report.failures(tolerance)
        if bad:
            worst = ", ".join(f"{n}={e:.3g}" for n, e in bad[:5])
            raise ExportError(f"verification failed (max abs error > {tolerance:g}); worst tensors: {worst}; "
                              f"nothing written to {out}")
    try:  # what landed on disk is what was checked
        atomic_write(out, data, check=lambda tmp: onnx.checker.check_model(tmp, full_check=True))
    except OSError as e:
        raise ExportError(f"{out}: cannot write ({e.strerror or e})") from None
    hist = graph_clean.op_histogram(model)
    return ExportResult(out, kind, direction, len(data), sum(hist.values()), hist, time.perf_counter() - t0,
                        report, notes)
