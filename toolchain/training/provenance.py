"""Where a model's weights came from, in words that stay true after the model is shipped (training cards)."""
from __future__ import annotations

import json

from edgeasr import pretrained
from edgeasr.models.checkpoint import WEIGHTS


def describe_init(init: str, nested: bool = False) -> str | None:
    """What a fine-tune started from, in words that stay true after shipping: a shipped name (``default``) is
    about to be replaced when the fine-tune ships under it, so name its weights' hash (the one exports record as
    ``edgeasr.source_sha256``) and its own card instead. Training records this text when it starts
    (``init_from`` in the run's config), while a shipped name still means the weights it loaded.

    ``nested``: describing what an earlier run started from. Its shipped name may have been replaced since, so
    without that run's own ``init_from`` the version is unknown and is said to be."""
    from edgeasr.runtimes.files import sha256_file

    path = pretrained.resolve_model_dir(init) if init else None
    if path is not None and (path / "summary.json").is_file() and path.resolve().parent != pretrained.HERE.resolve():
        # a run directory that was never shipped: its steps and hardware, and what it started from in turn
        run = json.loads((path / "summary.json").read_text())
        cfg = json.loads((path / "config.json").read_text())
        own = cfg.get("train", {}).get("init", "")
        before = cfg.get("init_from") or (describe_init(own, nested=True) if own and own != init else None)
        return (f"{init} ({run.get('steps')} steps on {run.get('hardware')}, dev WER "
                f"{100 * run.get('best_dev_wer', float('nan')):.2f} %" + (f"; itself fine-tuned from {before}" if before
                                                                         else "") + ")")
    if path is None or path.resolve().parent != pretrained.HERE.resolve():
        return init or None  # no fine-tune, or a directory without a training summary
    if nested:
        return f"{path.name} as shipped when that run started (which version was not recorded)"
    old = pretrained.card(path)
    before = f"; itself fine-tuned from {old['fine_tuned_from']}" if old.get("fine_tuned_from") else ""
    return (f"{path.name} as shipped before (model.safetensors sha256 {sha256_file(path / WEIGHTS)[:12]}…, "
            f"{old.get('steps')} steps on {old.get('trained_on')}, held-out test bi WER "
            f"{old.get('wer', {}).get('test', {}).get('bi')} %{before})")
