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
