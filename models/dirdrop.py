"""Direction Dropout (seed 000) and the per-layer direction plan of each inference mode.

During training each bidirectional layer drops one direction with probability p, so the trained model still
works when a direction is missing at inference: ``r2l`` drops only R2L (keeps L2R streaming strong), ``both``
drops either direction with equal odds (also enables R2L-only and alternating decoding).
"""
from __future__ import annotations

import random


def inference_directions(mode: str, n_layers: int, bidirectional: bool) -> list[str]:
    """Per-layer mixer direction for an inference mode: l2r (streamable), bi, alt (even L2R, odd R2L)."""
    if mode == "l2r":
        return ["l2r"] * n_layers
    if mode == "bi":
        return ["bi"] * n_layers
    if mode == "alt":
        if not bidirectional:
            raise ValueError("direction 'alt' needs a bidirectional mixer (rwkv, mamba2)")
        return ["l2r" if i % 2 == 0 else "r2l" for i in range(n_layers)]
    raise ValueError(f"unknown direction mode {mode!r}; choose l2r, bi or alt")


def training_directions(n_layers: int, variant: str, p: float, rng: random.Random) -> list[str]:
    """Directions for one training step of a bidirectional model (mode bi) under DirDrop."""
    plan = []
    for _ in range(n_layers):
        if variant == "none" or rng.random() >= p:
            plan.append("bi")
        elif variant == "r2l":
            plan.append("l2r")  # R2L dropped, L2R kept
        else:
            plan.append("l2r" if rng.random() < 0.5 else "r2l")
    return plan
