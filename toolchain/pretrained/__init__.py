"""Models shipped inside the package: one directory per model (config.json with a ``card`` + model.safetensors).

The flagship is also reachable as ``default``. A shipped name is accepted wherever a RUN_DIR is.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgeasr.runtimes.errors import UserError

HERE = Path(__file__).parent
DEFAULT = "rwkv-dirdrop-both"
# the flagship's sibling fine-tuned to stream in chunk-bi (it lost more than a point of offline bi WER, so it is not
# the default): what streaming ``default`` runs, 640 ms behind the audio: 320 ms chunks with a 320 ms look-ahead
# (dev WER 26.7 % against 31.3 % for plain 640 ms chunks at the same latency; docs/streaming.md)
STREAMING = "rwkv-chunk-bi"
STREAMING_MODE = "chunk-bi:320ms+320ms"


def shipped() -> dict[str, Path]:
    return {p.name: p for p in sorted(HERE.iterdir())
            if not p.name.startswith(".") and (p / "config.json").is_file()}  # .NAME.tmp: a ship in progress


def streaming_choice(name_or_dir: str) -> tuple[str, str | None]:
    """(model, mode) to stream a checkpoint with: ``default`` streams as its chunk-bi sibling; a model trained for
    chunk-bi (``chunk_bi_p`` > 0) in ``STREAMING_MODE``; anything else as named, in its own step mode (None)."""
    if name_or_dir == "default" and STREAMING in shipped():
        return STREAMING, STREAMING_MODE
    path = resolve_model_dir(name_or_dir)
    if path is not None:
        model_cfg = json.loads((path / "config.json").read_text()).get("model", {})
        if model_cfg.get("chunk_bi_p"):
            return name_or_dir, STREAMING_MODE
    return name_or_dir, None


def card(path: Path) -> dict:
    return json.loads((path / "config.json").read_text()).get("card", {})


def resolve_model_dir(name_or_dir: str) -> Path | None:
    """A checkpoint directory for a RUN_DIR or a shipped name (``default`` = the flagship); None if neither."""
    p = Path(name_or_dir)
    if (p / "config.json").is_file():
        return p
    models = shipped()
    name = DEFAULT if name_or_dir == "default" else name_or_dir
    return models.get(name)


def load_model(name_or_dir: str, direction: str | None = None):
    """(torch Encoder, config) from a RUN_DIR or shipped name; a one-line UserError when that fails."""
    from edgeasr.models.checkpoint import CheckpointError, load_checkpoint  # torch: the [train] extra

    path = resolve_model_dir(name_or_dir)
    if path is None:
        names = ", ".join(["default", *shipped()])
        raise UserError(f"{name_or_dir}: not a checkpoint directory nor a shipped model ({names})")
    try:
        model, config = load_checkpoint(path)
        if direction:
            model.set_direction(direction)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    except ValueError as e:
        raise UserError(f"{name_or_dir}: {e}") from None
    return model, config
