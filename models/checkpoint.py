"""Checkpoints: ``model.safetensors`` + ``config.json`` in one directory. Never pickles.

Writes go to a temporary file in the same directory and are renamed into place, so an interrupted save
leaves the previous complete checkpoint intact.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from edgeasr.models.config import EncoderConfig
from edgeasr.models.conformer import Encoder

FORMAT = "edgeasr-checkpoint/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, corrupt or inconsistent; the message names the file."""


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())  # mkstemp makes 0600; checkpoints get the usual umask permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(run_dir: Path, model: Encoder, meta: dict, weights_name: str = WEIGHTS,
                    dtype: torch.dtype | None = None, config_name: str = CONFIG) -> None:
    """Weights first, then the config that points at them: a reader never sees a config without weights."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
             for k, v in model.state_dict().items()}
    atomic_save_tensors(run_dir / weights_name, state)
    config = {**meta, "format": FORMAT, "model": model.cfg.to_dict()}
    atomic_write_json(run_dir / config_name, config)


def read_config(run_dir: Path, config_name: str = CONFIG) -> dict:
    path = Path(run_dir) / config_name
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (not a checkpoint directory)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if config.get("format") != FORMAT or "model" not in config:
        raise CheckpointError(f"{path}: not an edgeasr checkpoint config (format {config.get('format')!r})")
    return config


def load_checkpoint(run_dir: Path, weights_name: str = WEIGHTS,
                    config_name: str = CONFIG) -> tuple[Encoder, dict]:
    """Returns (fp32 model in eval mode, config dict). Weights stored in fp16 are upcast."""
    run_dir = Path(run_dir)
    config = read_config(run_dir, config_name)
    try:
        cfg = EncoderConfig.from_dict(config["model"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{run_dir / CONFIG}: invalid model config ({e})") from None
    model = Encoder(cfg)
    path = run_dir / weights_name
    if not path.is_file():
        raise CheckpointError(f"{path}: missing weights")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable safetensors ({e})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(x for x in (
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {unexpected[:3]}" if unexpected else "",
            f"shape mismatch {wrong[:3]}" if wrong else "") if x)
        raise CheckpointError(f"{path}: weights do not match {run_dir / CONFIG} ({detail})")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    # chunk-bi sizes in ms convert with the training features' frame shift
    model.frame_shift_ms = float(config.get("features", {}).get("frame_shift_ms", model.frame_shift_ms))
    model.set_direction(cfg.direction)
    return model.eval(), config
