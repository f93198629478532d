"""The "soft" variant of seed 001: 1-D deformable depthwise convolution + LayerNorm + Swish (+ pointwise Linear).

Per frame t, tap k (of K) and offset group g (channels are split in ``groups`` groups sharing offsets):

- offsets ``o[b,t,g,k]`` come from a small conv over the input (``offset_kernel`` taps; causal in ``"l2r"``,
  centred in ``"bi"``). It is initialised to zero, so the layer starts as a plain depthwise conv.
- ``"bi"``: ``delta = max_offset * tanh(o)`` in ``[-M, M]``, position ``t - K//2 + k + delta``.
- ``"l2r"``: ``delta = max_offset * (tanh(o) - 1)`` in ``[-2M, 0]``, position ``t - (K-1) + k + delta`` <= t:
  the window is causal, no sample is ever in the future. At zero init ``delta = -M``: the causal window starts as
  a plain depthwise conv over ``[t-K+1-M, t-M]`` (integer shift, so still exactly a plain conv), and the offset
  conv gets a non-zero gradient from the start.
- sampling is a Gather of ``floor(pos)`` and ``floor(pos)+1`` with linear interpolation (never the DeformConv op,
  never ``take_along_dim``, which exports a length-folded Mod). Positions before the sequence start read zeros
  (left zero padding); in ``"bi"`` positions past the valid length read zeros too. The fractional part is taken
  from ``delta`` alone (``delta - floor(delta)``), never from ``t + delta``, so full and streaming forms
  interpolate with bit-identical weights. In ``"l2r"`` the upper index is clamped to t (its weight is then 0).
- then per-channel weights over the K taps + bias, ``LayerNorm(D)``, SiLU and a pointwise ``Linear(D, D)``.

Streaming state: ``cache`` ``[P, D]``, the last P input frames, with
``P = max(K - 1 + ceil(2 * max_offset), offset_kernel - 1)``: the lowest index read for frame t is
``t - (K-1) + floor(delta) >= t - (K-1) - ceil(2M)`` (``delta >= -2M`` holds exactly in fp32), and the upper
interpolation index is clamped to t, so nothing later than the current frame and nothing earlier than
``t - (K-1) - ceil(2M)`` is ever needed. The zero initial cache *is* the left zero padding of the full form, so
``forward(..., "l2r")`` and ``step`` share one code path.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgeasr.models.mixers import Mixer, register
from edgeasr.models.state import State, StateSpec


def _fp32(v: float) -> float:
    return float(torch.tensor(float(v), dtype=torch.float32))


@register("deformable")
class DeformableMixer(Mixer):
    bidirectional = False

    def __init__(
        self,
        d_model: int,
        kernel_size: int = 5,
        max_offset: float = 4.0,
        groups: int = 4,
        offset_kernel: int = 3,
        dropout: float = 0.0,  # accepted for a uniform mixer config; the module itself has no dropout
    ):
        super().__init__(d_model)
        if kernel_size < 1 or offset_kernel < 1:
            raise ValueError("kernel_size and offset_kernel must be >= 1")
        if max_offset < 0:
            raise ValueError(f"max_offset must be >= 0, got {max_offset}")
        if d_model % groups:
            raise ValueError(f"d_model={d_model} is not divisible by groups={groups}")
        self.kernel_size = K = int(kernel_size)
        self.max_offset = _fp32(max_offset)  # the value the fp32 graph really multiplies by
        self.groups = int(groups)
        self.offset_kernel = int(offset_kernel)
        # exact past-frame need of the causal form (see module docstring); >= 1 so the state is never empty
        self.cache_frames = max(K - 1 + math.ceil(2 * self.max_offset), self.offset_kernel - 1, 1)

        self.offset_conv = nn.Conv1d(d_model, self.groups * K, self.offset_kernel)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)
        self.weight = nn.Parameter(torch.empty(d_model, K))  # depthwise taps
        self.bias = nn.Parameter(torch.zeros(d_model))
        nn.init.uniform_(self.weight, -1.0 / math.sqrt(K), 1.0 / math.sqrt(K))
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, d_model)

    # -- pieces ----------------------------------------------------------------------------------------------
    def _offsets(self, buf: torch.Tensor) -> torch.Tensor:
        """buf [B, T + offset_kernel - 1, D] (already padded) -> raw offsets [B, T, G, K]."""
        o = self.offset_conv(buf.transpose(1, 2)).transpose(1, 2)  # [B, T, G*K]
        return o.reshape(o.shape[0], -1, self.groups, self.kernel_size)

    def _sample(self, buf: torch.Tensor, base: torch.Tensor, delta: torch.Tensor, hi: torch.Tensor | None):
        """Linear-interpolated gather.

        buf [B,S,D]; base [T,K] float integer-valued buffer positions; delta [B,T,G,K]; hi [T,1] float upper
        bound for the ``floor+1`` index (None: no bound needed). Returns the depthwise-conv output [B,T,D].
        """
        B, S, D = buf.shape
        G, K = self.groups, self.kernel_size
        cg = D // G
        fl = torch.floor(delta)
        frac = delta - fl  # from delta alone: identical in full and streaming forms
        i0 = torch.clamp(base.unsqueeze(1) + fl, min=0.0)  # [B,T,G,K]
        i1 = i0 + 1.0
        if hi is not None:
            i1 = torch.minimum(i1, hi.unsqueeze(1))
        buf4 = buf.reshape(B, S, G, cg)

        def gather(idx: torch.Tensor) -> torch.Tensor:  # [B,T,G,K] -> [B,T,K,G,cg]
            idx = idx.permute(0, 1, 3, 2).reshape(B, -1, G, 1).to(torch.int64).expand(-1, -1, -1, cg)
            return torch.gather(buf4, 1, idx).reshape(B, -1, K, G, cg)

        v0, v1 = gather(i0), gather(i1)
        w1 = frac.permute(0, 1, 3, 2).unsqueeze(-1)  # [B,T,K,G,1]
        vals = (v0 + w1 * (v1 - v0)).reshape(B, -1, K, D)
        return (vals * self.weight.t()).sum(dim=2) + self.bias  # [B,T,D]

    def _head(self, y: torch.Tensor) -> torch.Tensor:
        return self.proj(F.silu(self.norm(y)))

    def _causal(self, buf: torch.Tensor) -> torch.Tensor:
        """buf = [P past frames ; T chunk frames] -> [B,T,D] (shared by forward l2r and step)."""
        P, K, Ko = self.cache_frames, self.kernel_size, self.offset_kernel
        o = self._offsets(buf[:, P - (Ko - 1):] if Ko > 1 else buf[:, P:])
        delta = self.max_offset * (torch.tanh(o) - 1.0)  # in [-2M, 0]
        t = torch.arange(o.shape[1], device=buf.device).to(buf.dtype).view(-1, 1)  # [T,1]
        k = torch.arange(K, device=buf.device).to(buf.dtype).view(1, -1)  # [1,K]
        base = (t + float(P - (K - 1))) + k  # buffer position of tap k at zero offset
        return self._head(self._sample(buf, base, delta, t + float(P)))

    # -- full sequence ---------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, lengths: torch.Tensor, direction: str = "l2r") -> torch.Tensor:
        if direction == "l2r":
            return self._causal(F.pad(x, (0, 0, self.cache_frames, 0)))
        if direction != "bi":
            raise ValueError(
                f"mixer 'deformable' is not bidirectional: direction must be 'l2r' or 'bi', not {direction!r}"
            )
        B, T, D = x.shape
        K, Ko, M = self.kernel_size, self.offset_kernel, self.max_offset
        keep = torch.arange(T, device=x.device).view(1, T, 1) < lengths.view(-1, 1, 1)
        x = x * keep.to(x.dtype)  # past the valid length reads zeros
        lo = (Ko - 1) // 2
        o = self._offsets(F.pad(x, (0, 0, lo, Ko - 1 - lo)))
        delta = M * torch.tanh(o)  # in [-M, M]
        pl = K // 2 + math.ceil(M)
        pr = (K - 1 - K // 2) + math.ceil(M) + 1  # covers floor+1 of the furthest right tap
        buf = F.pad(x, (0, 0, pl, pr))
        t = torch.arange(T, device=x.device).to(x.dtype).view(-1, 1)
        k = torch.arange(K, device=x.device).to(x.dtype).view(1, -1)
        base = (t + float(pl - K // 2)) + k
        return self._head(self._sample(buf, base, delta, None))

    # -- streaming -------------------------------------------------------------------------------------------
    def state_specs(self) -> list[StateSpec]:
        return [StateSpec("cache", (self.cache_frames, self.d_model), torch.float32, 0.0)]

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        buf = torch.cat([state["cache"], x], dim=1)
        return self._causal(buf), {"cache": buf[:, -self.cache_frames:]}
