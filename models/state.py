"""The streaming state protocol shared by every stateful module.

A stateful module declares its states with `state_specs()`; each state is one batch-first tensor.
`step(x, state)` consumes a chunk and the state carried into it and returns the output and the next state.
The encoder prefixes module-local names (``layers.3.mixer.wkv``) so the ONNX step graph can expose them as
``in.<name>`` / ``out.<name>`` and describe them in metadata.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class StateSpec:
    name: str  # module-local (or, once prefixed, encoder-global) name
    shape: tuple[int, ...]  # shape without the leading batch axis
    dtype: torch.dtype = torch.float32
    init: float = 0.0  # every element starts at this value

    def prefixed(self, prefix: str) -> "StateSpec":
        return StateSpec(f"{prefix}.{self.name}", self.shape, self.dtype, self.init)

    def initial(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.full((batch, *self.shape), self.init, dtype=self.dtype, device=device)


def initial_state(specs: list[StateSpec], batch: int, device=None) -> State:
    return {s.name: s.initial(batch, device) for s in specs}


# --- look-ahead steps ----------------------------------------------------------------------------------------
# A look-ahead step call holds the chunk and, after it, a few frames of the next one: every module computes its
# outputs over all of them but hands on the state it would have after the chunk alone ("kept" frames), so the
# next call can process the look-ahead frames again as its own chunk. ``kept`` is a frame count (a Python int, or
# None for an ordinary call); with fewer frames than that in the call, all of them are kept.

def keep_mask(x: torch.Tensor, kept: int, dim: int = 1) -> torch.Tensor:
    """``[T]`` bool: True for the first ``kept`` positions along ``dim`` (T may be a traced size)."""
    return torch.arange(x.shape[dim], device=x.device) < kept


def kept_window(full: torch.Tensor, kept_mask: torch.Tensor, size: int, dim: int = 1) -> torch.Tensor:
    """The ``size`` positions of ``full`` (a cache of ``size`` frames followed by the call's frames, along ``dim``)
    that end at the last kept frame: the cache a causal convolution hands on after the kept frames."""
    start = kept_mask.to(torch.int64).sum()
    return full.index_select(dim, start + torch.arange(size, device=full.device))


def kept_last(with_first: torch.Tensor, kept_mask: torch.Tensor) -> torch.Tensor:
    """``[B, 1 + T, D]`` (the previous call's last frame, then this call's) -> ``[B, D]``: the last kept frame."""
    return kept_window(with_first, kept_mask, 1).squeeze(1)
