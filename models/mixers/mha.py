"""Baseline mixer: multi-head self-attention with a bounded left context.

- ``"l2r"``: frame t attends to frames ``[t - left_context, t]`` (causal, ``left_context + 1`` keys at most).
- ``"bi"``: full attention over the valid frames (key padding mask from ``lengths``).

No positional encoding: the Conformer convolution module (and the causal subsampling) supplies position, and
leaving it out keeps the streaming step free of absolute-time inputs. Masks use a large *finite* negative
(``-1e4``, written with ``masked_fill`` so masked weights are exactly 0 after softmax, and a fully masked row
gives uniform weights instead of NaN); never ``-inf``.

Streaming state (batch-first):

- ``k``, ``v`` ``[left_context, D]``: the keys / values of the last ``left_context`` frames, oldest first,
  right-aligned (the newest frame is the last row).
- ``valid`` ``[]`` (``[B]`` with batch), **float32**: how many of the cached rows are real frames
  (``min(frames seen, left_context)``); rows ``< left_context - valid`` are masked. float32 rather than int32 so
  every state of every mixer is float32: runtimes, calibration and OpenVINO ``MakeStateful`` treat all states
  uniformly, the quantizer never touches it (it only feeds a comparison and a ``Min``), and values up to
  ``left_context`` are exact in fp32. The chunk length is added as ``ReduceSum`` of ones so T stays dynamic.

Analysis hooks (``edgeasr analyze``, seed 001), inference only, both off by default (``None``) — when off no path
computes anything more, so training, export and the equality tests see the mixer unchanged:

- ``capture``: a callable given each softmax output ``attn [B, H, Tq, Tk]`` (after masking, before dropout). The
  key axis is the path's own: ``forward`` (``l2r`` and ``bi``) uses the ``T x T`` masked path while a capture is set
  (key j = frame j), ``step`` gives ``[left_context cached frames, chunk]`` (key j = frame ``j - left_context``
  relative to the chunk start).
- ``band``: keep only keys with ``|query time - key time| <= band`` frames (the main diagonal and ``band``
  diagonals on each side); the other scores get the large negative before the softmax, like every other mask.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgeasr.models.mixers import Mixer, register
from edgeasr.models.state import State, StateSpec

NEG = -1e4
BLOCKED_L2R = True  # l2r full forward in blocks (linear in T); False: one T x T mask (benchmarks compare the two)


@register("mha")
class MHAMixer(Mixer):
    bidirectional = False

    def __init__(self, d_model: int, heads: int = 4, left_context: int = 32, dropout: float = 0.1):
        super().__init__(d_model)
        if d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        if int(left_context) < 1:
            raise ValueError(f"left_context must be >= 1 frame, got {left_context}")
        self.heads = heads
        self.head_dim = d_model // heads
        self.left_context = int(left_context)
        self.dropout = float(dropout)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.capture = None  # analysis hooks (module docstring); None: off
        self.band: int | None = None

    # -- helpers ---------------------------------------------------------------------------------------------
    def _split(self, t: torch.Tensor) -> torch.Tensor:  # [B,T,D] -> [B,H,T,Dh]
        B = t.shape[0]
        return t.reshape(B, -1, self.heads, self.head_dim).transpose(1, 2)

    @property
    def _probed(self) -> bool:
        return self.capture is not None or self.band is not None

    def _attend(self, q, k, v, allowed: torch.Tensor, offset=None) -> torch.Tensor:
        """q [B,Tq,D], k/v [B,Tk,D], allowed [B|1,Tq,Tk] bool -> [B,Tq,D]. ``offset`` [1,Tq,Tk]: query time - key
        time in frames, given (and used) only while an analysis hook is set."""
        B = q.shape[0]
        if self.band is not None:
            allowed = allowed & (offset.abs() <= self.band)
        qh, kh, vh = self._split(q), self._split(k), self._split(v)
        scores = torch.matmul(qh, kh.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        scores = scores.masked_fill(~allowed.unsqueeze(1), NEG)
        attn = torch.softmax(scores, dim=-1)
        if self.capture is not None:
            self.capture(attn.detach())
        attn = F.dropout(attn, self.dropout, self.training)
        y = torch.matmul(attn, vh).transpose(1, 2).reshape(B, -1, self.d_model)
        return self.out(y)

    # -- full sequence ---------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, lengths: torch.Tensor, direction: str = "l2r") -> torch.Tensor:
        if direction not in ("l2r", "bi"):
            raise ValueError(f"mixer 'mha' is not bidirectional: direction must be 'l2r' or 'bi', not {direction!r}")
        if direction == "l2r":  # a capture wants frame-indexed keys: the T x T path
            return self._blocked_l2r(x) if BLOCKED_L2R and self.capture is None else self._masked_l2r(x)
        T = x.shape[1]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        allowed = torch.arange(T, device=x.device).view(1, 1, T) < lengths.view(-1, 1, 1)  # key padding [B,1,T]
        offset = None
        if self._probed:
            t = torch.arange(T, device=x.device)
            offset = (t.view(T, 1) - t.view(1, T)).unsqueeze(0)
        return self._attend(q, k, v, allowed, offset)

    def _blocked_l2r(self, x: torch.Tensor) -> torch.Tensor:
        """Bounded-left-context attention in blocks of ``left_context`` frames, each attending to itself and the
        block before: ``2 T L`` scores instead of a ``T x T`` mask, so long inputs cost linear time and memory.
        Purely positional: a valid query never reaches a padded key, and padded queries behave exactly like the
        streaming step (each block is a step whose cache is the previous block)."""
        B, T, D = x.shape
        L = self.left_context
        pad = (L - T % L) % L
        q, k, v = self.qkv(F.pad(x, (0, 0, 0, pad))).chunk(3, dim=-1)  # [B, n*L, D]
        q, k, v = (t.reshape(B, -1, L, D) for t in (q, k, v))  # [B, n, L, D]
        k = torch.cat([F.pad(k, (0, 0, 0, 0, 1, 0))[:, :-1], k], dim=2)  # [B, n, 2L, D]: previous block, this one
        v = torch.cat([F.pad(v, (0, 0, 0, 0, 1, 0))[:, :-1], v], dim=2)
        i = torch.arange(L, device=x.device).view(1, L, 1)
        j = torch.arange(2 * L, device=x.device).view(1, 1, 2 * L)
        first = (torch.arange(q.shape[1], device=x.device) == 0).view(-1, 1, 1)  # no block before the first
        allowed = (j >= i) & (j <= i + L) & ~(first & (j < L))  # key time in [t - L, t], never before 0
        y = self._attend(q.reshape(-1, L, D), k.reshape(-1, 2 * L, D), v.reshape(-1, 2 * L, D),
                         allowed.repeat(B, 1, 1), (i + L - j) if self._probed else None)  # all blocks as one batch
        return y.reshape(B, -1, D)[:, :T]

    def _masked_l2r(self, x: torch.Tensor) -> torch.Tensor:
        """The same attention as one ``T x T`` masked softmax: the readable reference (tests, benchmarks)."""
        T = x.shape[1]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        d = torch.arange(T, device=x.device).view(T, 1) - torch.arange(T, device=x.device).view(1, T)  # query - key
        return self._attend(q, k, v, ((d >= 0) & (d <= self.left_context)).unsqueeze(0), d.unsqueeze(0))

    # -- streaming -------------------------------------------------------------------------------------------
    def state_specs(self) -> list[StateSpec]:
        L, D = self.left_context, self.d_model
        return [
            StateSpec("k", (L, D), torch.float32, 0.0),
            StateSpec("v", (L, D), torch.float32, 0.0),
            StateSpec("valid", (), torch.float32, 0.0),
        ]

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        L = self.left_context
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        kc = torch.cat([state["k"], k], dim=1)  # [B, L+T, D]; key j is at time (j - L) relative to chunk start
        vc = torch.cat([state["v"], v], dim=1)
        i = torch.arange(x.shape[1], device=x.device).view(1, -1, 1)  # query (chunk-local)
        j = torch.arange(kc.shape[1], device=x.device).view(1, 1, -1)
        window = (j >= i) & (j <= i + L)  # key time in [i - L, i]
        valid = state["valid"]
        real = j.to(valid.dtype) >= (L - valid).view(-1, 1, 1)  # cached rows beyond the counter are masked
        y = self._attend(q, kc, vc, window & real, (i + L - j) if self._probed else None)
        n = torch.ones_like(x[:, :, 0]).sum(dim=1)  # chunk length as [B] float (keeps T dynamic in ONNX)
        new_state = {
            "k": kc[:, -L:],
            "v": vc[:, -L:],
            "valid": torch.clamp(valid + n, max=float(L)),
        }
        return y, new_state
