"""The direction logic shared by the bidirectional mixers (RWKV-6, Mamba-2): two direction-specific cores.

A core maps ``[B, T, D]`` causally from its zero (initial) state (``core(x, block=None)``, ``core.chunk_len``). R2L is the R2L core run on each sequence reversed
within its valid length. Per-layer directions (models/dirdrop.py):

- ``l2r`` / ``r2l``: one core; ``bi``: both, averaged.
- ``chunk-bi`` / ``chunk-r2l``: R2L restarts at every chunk of ``chunk`` encoder frames (boundaries at multiples of
  ``chunk`` from the utterance start; the last, partial chunk uses only its valid frames), averaged with L2R over the
  whole sequence for ``chunk-bi``. The chunks are rows of one batch, so it costs what ``bi`` does.

``step`` is the streaming form: L2R with the carried state (the subclass's ``_step_l2r``), and for ``chunk-bi``
the R2L core over every frame of this call from its initial state: a runtime feeds exactly one chunk per call, or,
with a look-ahead, the chunk and the next chunk's first frames (``keep`` marks the chunk: L2R's state is handed on
from its end, so the next call reads the look-ahead frames again as its own chunk).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from edgeasr.models.mixers import Mixer, flip_valid
from edgeasr.models.state import State

DIRECTIONS = ("l2r", "r2l", "bi", "chunk-bi", "chunk-r2l")
STEP_DIRECTIONS = ("l2r", "chunk-bi")


def r2l_within_chunks(core, x: torch.Tensor, lengths: torch.Tensor, chunk: int, lookahead: int = 0) -> torch.Tensor:
    """R2L of ``core`` within each chunk of ``chunk`` frames: ``[B, T, D]`` -> ``[B, T, D]``, loop-free.

    ``lookahead`` > 0 (training): each chunk's R2L starts ``lookahead`` frames later, at the end of its window
    ``[i C, (i + 1) C + R)`` (windows overlap; the rows are the windows). The look-ahead frames are this layer's
    inputs from the whole pass, which read their own look-ahead in the layer below: context leaks R frames per
    layer, where a stream (``step`` with ``keep``) recomputes every layer's look-ahead inside the window. A training
    approximation; evaluation and export use the exact streaming form."""
    B, T, D = x.shape
    pad = (chunk - T % chunk) % chunk
    n = (T + pad) // chunk
    win = chunk + lookahead
    if lookahead:  # overlapping windows as batch rows
        xc = F.pad(x, (0, 0, 0, pad + lookahead)).unfold(1, win, chunk).permute(0, 1, 3, 2).reshape(B * n, win, D)
    else:
        xc = F.pad(x, (0, 0, 0, pad)).reshape(B * n, chunk, D)  # chunks as batch rows
    starts = torch.arange(n, device=x.device) * chunk
    # valid frames per window; <= 0 past the end (flip_valid then leaves the chunk as it is). Min, not an int64
    # Clip: TensorRT has no integer Clip
    valid = torch.minimum(lengths.unsqueeze(1) - starts.unsqueeze(0), torch.full_like(starts, win)).reshape(B * n)
    # blocks of the chunked scan no longer than a chunk: a 4-frame chunk must not pad to a 32-frame block
    y = flip_valid(core(flip_valid(xc, valid), min(win, core.chunk_len)), valid)
    return y[:, :chunk].reshape(B, n * chunk, D)[:, :T]


class BidirectionalMixer(Mixer):
    """Subclasses set ``self.l2r`` and ``self.r2l`` (cores) and implement ``_step_l2r(x, state)``."""

    bidirectional = True

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, direction: str = "l2r",
                chunk: int | None = None, lookahead: int = 0) -> torch.Tensor:
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
            y_r2l = r2l_within_chunks(self.r2l, x, lengths, int(chunk), int(lookahead))
        else:
            y_r2l = flip_valid(self.r2l(flip_valid(x, lengths)), lengths)
        if direction in ("r2l", "chunk-r2l"):
            return y_r2l
        return 0.5 * (self.l2r(x) + y_r2l)

    def _step_l2r(self, x: torch.Tensor, state: State, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """L2R from the carried state; ``keep``: hand on the state after the kept frames (a look-ahead call)."""
        raise NotImplementedError  # abstract

    def _step_r2l(self, x: torch.Tensor) -> torch.Tensor:
        """R2L over the frames of one call from the initial state (subclasses use their step form)."""
        return self.r2l(x.flip(1)).flip(1)

    def step(self, x: torch.Tensor, state: State, direction: str = "l2r",
             keep: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """``keep`` (``[T]`` bool, chunk-bi only): a look-ahead call, the chunk then the next chunk's first frames;
        L2R hands on its state after the chunk, R2L runs over all of them from the end."""
        if direction not in STEP_DIRECTIONS:
            raise ValueError(f"step direction must be one of {STEP_DIRECTIONS}, got {direction!r}")
        y, new = self._step_l2r(x, state, keep)
        if direction == "chunk-bi":  # this call is one whole chunk: R2L from the initial state, no state kept
            y = 0.5 * (y + self._step_r2l(x))
        return y, new
