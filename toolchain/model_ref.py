"""A model as a user names it: an exported ONNX file (any runtime backend) or a checkpoint RUN_DIR / shipped name
(the torch reference). Every command that takes MODEL resolves it here, so they all accept the same things and fail
with the same one-line messages."""
from __future__ import annotations

from pathlib import Path

from edgeasr.runtimes.errors import UserError


def is_onnx(model: str) -> bool:
    p = Path(model)
    return p.suffix.lower() == ".onnx" or (p.is_file() and not (p / "config.json").exists())


def exported_mode_error(model: str, exported: str, wanted: list[str]) -> UserError:
    """An ONNX file decodes only in the direction mode it was exported in (transcribe, eval, lm tune)."""
    return UserError(f"{model} was exported in {exported} mode; for {', '.join(wanted)} export it again "
                     f"(edgeasr export RUN {_export_args(wanted[0])})")


def _export_args(mode: str) -> str:
    """The ``edgeasr export`` options that give a file decoding in ``mode`` (e.g. ``chunk-bi:480ms+160ms``)."""
    from edgeasr.models.dirdrop import parse_lookahead, parse_mode

    try:
        direction, chunk = parse_mode(mode)
        lookahead = parse_lookahead(mode)
    except ValueError:
        return f"--direction {mode.partition(':')[0]}"
    kind = "step" if direction in ("l2r", "chunk-bi") else "full"
    args = f"--kind {kind} --direction {direction}"
    if chunk:
        args += f" --chunk-frames {chunk}"
    return args + (f" --lookahead-frames {lookahead}" if lookahead else "")


def check_model_exists(model: str) -> None:
    """A one-line UserError for a missing ONNX file or an unknown checkpoint, before anything loads (the load that
    follows reads the file once, and reports what is wrong inside it)."""
    if is_onnx(model):
        if not Path(model).is_file():
            raise UserError(f"{model}: no such ONNX file")
        return
    from edgeasr import pretrained

    if pretrained.resolve_model_dir(model) is None:  # same words as edgeasr.pretrained.load_model
        names = ", ".join(["default", *pretrained.shipped()])
        raise UserError(f"{model}: not a checkpoint directory nor a shipped model ({names})")


def open_backend(model: str, backend: str | None, stream: bool, threads: int, precision: str | None,
                 chunk_frames: int | None = None, stateful: bool = True, direction: str | None = None):
    """(backend instance, activated) for an ONNX file (chosen backend, default ort) or a RUN_DIR/NAME (torch)."""
    from edgeasr.runtimes.backends import get_backend

    supported = {"openvino": ("fp32", "bf16", "fp16"), "tensorrt": ("fp32", "fp16")}
    chosen = backend or ("ort" if is_onnx(model) else "torch")
    if precision and precision not in supported.get(chosen, ("fp32",)):
        raise UserError(f"--precision {precision} is not offered by the {chosen} backend "
                        f"(choose {', '.join(supported.get(chosen, ('fp32',)))})")
    if precision == "fp32":
        precision = None
    if is_onnx(model):
        if not Path(model).is_file():
            raise UserError(f"{model}: no such ONNX file")
        name = backend or "ort"
        if name == "torch":
            raise UserError(f"{model}: the torch backend runs checkpoints (RUN_DIR or shipped name), not ONNX files")
        opts = {"threads": threads, "precision": precision}
        if name == "openvino":
            opts["stateful"] = stateful
        b = get_backend(name, model, **opts)
    else:
        name = backend or "torch"
        if name != "torch":
            raise UserError(f"{model}: a checkpoint runs on --backend torch; for {name} export it first "
                            f"(edgeasr export {model} --kind step)")
        b = get_backend("torch", model, threads=threads, kind="step" if stream else "full",
                        chunk_frames=chunk_frames or 32, direction=direction)
    return b.activate()
