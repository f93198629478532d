"""The "hard" variant of seed 001: a Conformer block with no mixer at all.

The block adds the mixer output as a residual, so returning zeros removes the mixer exactly. No parameters, no
state; ``step`` is trivially the streaming form of ``forward``.
"""
from __future__ import annotations

import torch

from edgeasr.models.mixers import Mixer, register
from edgeasr.models.state import State, StateSpec


@register("none")
class NoMixer(Mixer):
    bidirectional = False

    def __init__(self, d_model: int, **options):
        super().__init__(d_model)  # options (e.g. a shared ``dropout``) are accepted and ignored

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, direction: str = "l2r") -> torch.Tensor:
        if direction not in ("l2r", "bi"):
            raise ValueError(f"mixer 'none' supports directions 'l2r' and 'bi', not {direction!r}")
        return torch.zeros_like(x)

    def state_specs(self) -> list[StateSpec]:
        return []

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return torch.zeros_like(x), dict(state)
