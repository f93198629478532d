"""Peer ASR column (DESIGN.md §6): PyPI ``pocketsphinx`` with the en-us model it ships, on the same test set.

Only availability lives here; ``edgeasr.evaluation.parity`` runs it as one more cell (WER/CER and RTF at 1 thread, measured
like every other cell: audio loaded first, 16-bit PCM, one ``process_raw(full_utt=True)`` per utterance, decoder
load excluded from RTF). Install with ``pip install edgeasr[peer]``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path


def available() -> tuple[bool, str]:
    """(ok, reason): never raises, never loads the acoustic model."""
    try:
        spec = importlib.util.find_spec("pocketsphinx")
    except (ImportError, ValueError) as e:
        return False, f"pocketsphinx not importable ({e}): pip install edgeasr[peer]"
    if spec is None:
        return False, "pocketsphinx not installed: pip install edgeasr[peer]"
    try:
        import pocketsphinx

        model = Path(pocketsphinx.get_model_path()) / "en-us"
    except Exception as e:  # noqa: BLE001 - a broken install must not break the report
        return False, f"pocketsphinx unusable ({type(e).__name__}: {e})"
    if not model.is_dir():
        return False, f"pocketsphinx has no en-us model at {model}"
    return True, f"pocketsphinx {getattr(pocketsphinx, '__version__', '')} en-us".replace("  ", " ")
