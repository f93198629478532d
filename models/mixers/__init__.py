"""Mixer registry: the module that replaces self-attention inside a Conformer block.

Every mixer takes and returns ``[B, T, D]`` and implements:

- ``forward(x, lengths, direction)``: full sequence. ``lengths`` (``[B]`` int64) marks valid frames; padded
  frames may hold anything but must never change valid frames. ``direction`` is ``"l2r"`` (causal: frame t sees
  only frames <= t), ``"r2l"`` (anti-causal, bidirectional mixers only) or ``"bi"``.
- ``state_specs()`` / ``step(x, state)``: the streaming form of ``direction="l2r"``. Running ``step`` chunk by
  chunk from ``initial_state`` must equal ``forward(x, lengths, "l2r")`` for any chunking (1e-5, fp32).

``bidirectional = True`` marks mixers with direction-specific weights (RWKV, Mamba-2), which DirDrop and the
``alt`` and ``chunk-bi`` inference modes act on; they share ``bidirectional.BidirectionalMixer``, whose
``forward(x, lengths, direction, chunk)`` also takes ``chunk-bi`` / ``chunk-r2l`` (R2L within chunks of ``chunk``
encoder frames) and whose ``step(x, state, direction)`` also takes ``chunk-bi`` (one whole chunk per call).
"""
from __future__ import annotations

import importlib

import torch
from torch import nn

from edgeasr.models.state import State, StateSpec

MIXERS: dict[str, type["Mixer"]] = {}
_MODULES = ("mha", "rwkv", "mamba2", "none", "deformable")


def register(name: str):
    def wrap(cls):
        cls.name = name
        MIXERS[name] = cls
        return cls

    return wrap


class Mixer(nn.Module):
    name = "abstract"
    bidirectional = False

    def __init__(self, d_model: int, **options):
        super().__init__()
        self.d_model = d_model

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, direction: str = "l2r") -> torch.Tensor:
        raise NotImplementedError  # abstract

    def state_specs(self) -> list[StateSpec]:
        return []

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        raise NotImplementedError  # abstract


def mixer_names() -> list[str]:
    return list(_MODULES)


def build_mixer(name: str, d_model: int, options: dict | None = None) -> Mixer:
    if name not in _MODULES:
        raise ValueError(f"unknown mixer {name!r}; choose one of {', '.join(_MODULES)}")
    importlib.import_module(f"edgeasr.models.mixers.{name}")
    return MIXERS[name](d_model, **(options or {}))


def flip_valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence within its valid length (padding stays at the end), so R2L starts at the last
    real frame. Applying it twice is the identity on valid frames."""
    B, T = x.shape[:2]
    t = torch.arange(T, device=x.device).unsqueeze(0)  # [1,T]
    idx = lengths.unsqueeze(1) - 1 - t  # [B,T]
    idx = torch.where(idx >= 0, idx, t)  # padded positions map to themselves
    idx = idx.view(B, T, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, idx)
