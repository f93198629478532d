"""The direction logic shared by the bidirectional mixers (RWKV-6, Mamba-2): two direction-specific cores.

A core maps ``[B, T, D]`` causally from its zero (initial) state (``core(x, block=None)``, ``core.chunk_len``). R2L is the R2L core run on each sequence reversed
within its valid length. Per-layer directions (models/dirdrop.py):

- ``l2r`` / ``r2l``: one core; ``bi``: both, averaged.
- ``chunk-bi`` / ``chunk-r2l``: R2L restarts at every chunk of ``chunk`` encoder frames (boundaries at multiples of
  ``chunk`` from the utterance start; the last, partial chunk uses only its valid frames), averaged with L2R over the
  whole sequence for ``chunk-bi``. The chunks are rows of one batch, so it costs what ``bi`` does.

``step`` is the streaming form: L2R with the carried state (the subclass's ``_step_l2r``), and for ``chunk-bi``
the R2L core over every frame of this call from its initial state: a runtime feeds exactly one chunk per call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from edgeasr.models.mixers import Mixer, flip_valid
from edgeasr.models.state import State

DIRECTIONS = ("l2r", "r2l", "bi", "chunk-bi", "chunk-r2l")
STEP_DIRECTIONS = ("l2r", "chunk-bi")


def r2l_within_chunks(core, x: torch.Tensor, lengths: torch.Tensor, chunk: int) -> torch.Tensor:
    """R2L of ``core`` within each chunk of ``chunk`` frames: ``[B, T, D]`` -> ``[B, T, D]``, loop-free."""
    B, T, D = x.shape
    pad = (chunk - T % chunk) % chunk
    n = (T + pad) // chunk
    xc = F.pad(x, (0, 0, 0, pad)).reshape(B * n, chunk, D)  # chunks as batch rows
    starts = torch.arange(n, device=x.device) * chunk
    # valid frames per chunk; <= 0 past the end (flip_valid then leaves the chunk as it is). Min, not an int64
    # Clip: TensorRT has no integer Clip
    valid = torch.minimum(lengths.unsqueeze(1) - starts.unsqueeze(0), torch.full_like(starts, chunk)).reshape(B * n)
    # blocks of the chunked scan no longer than a chunk: a 4-frame chunk must not pad to a 32-frame block
    y = flip_valid(core(flip_valid(xc, valid), min(chunk, core.chunk_len)), valid)
    return y.reshape(B, n * chunk, D)[:, :T]


class BidirectionalMixer(Mixer):
    """Subclasses set ``self.l2r`` and ``self.r2l`` (cores) and implement ``_step_l2r(x, state)``."""

    bidirectional = True

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, direction: str = "l2r",
                chunk: int | None = None) -> torch.Tensor:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        lengths = lengths.to(x.device)
        valid = torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
        x = torch.where(valid.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
        if direction == "l2r":
            return self.l2r(x)
        if direction.startswith("chunk-"):
            if not chunk or chunk < 1:
                raise ValueError(f"direction {direction!r} needs a chunk of at least one encoder frame, got {chunk}")
            y_r2l = r2l_within_chunks(self.r2l, x, lengths, int(chunk))
        else:
            y_r2l = flip_valid(self.r2l(flip_valid(x, lengths)), lengths)
        if direction in ("r2l", "chunk-r2l"):
            return y_r2l
        return 0.5 * (self.l2r(x) + y_r2l)

    def _step_l2r(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        raise NotImplementedError  # abstract

    def _step_r2l(self, x: torch.Tensor) -> torch.Tensor:
        """R2L over the frames of one call from the initial state (subclasses use their step form)."""
        return self.r2l(x.flip(1)).flip(1)

    def step(self, x: torch.Tensor, state: State, direction: str = "l2r") -> tuple[torch.Tensor, State]:
        if direction not in STEP_DIRECTIONS:
            raise ValueError(f"step direction must be one of {STEP_DIRECTIONS}, got {direction!r}")
        y, new = self._step_l2r(x, state)
        if direction == "chunk-bi":  # this call is one whole chunk: R2L from the initial state, no state kept
            y = 0.5 * (y + self._step_r2l(x))
        return y, new
