"""Models shipped inside the package: one directory per model (config.json with a ``card`` + model.safetensors).

The flagship is also reachable as ``default``. A shipped name is accepted wherever a RUN_DIR is.
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
DEFAULT = "rwkv-dirdrop-both"


def shipped() -> dict[str, Path]:
    return {p.name: p for p in sorted(HERE.iterdir())
            if not p.name.startswith(".") and (p / "config.json").is_file()}  # .NAME.tmp: a ship in progress


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
