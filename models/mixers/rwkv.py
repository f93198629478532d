"""RWKV-6 time-mix (x060) as a bidirectional Conformer mixer with direction-specific weights.

Per head (K = head_size), with the state ``S`` indexed ``[key, value]`` and the decay acting on the key axis::

    o_t = r_t (diag(u) k_tᵀ v_t + S_{t-1})
    S_t = diag(w_t) S_{t-1} + k_tᵀ v_t,        w_t = exp(-exp(d_t))

Training uses a chunked parallel form (plain torch; a Python loop only over chunks, for the state hand-over);
streaming uses the per-frame recurrence in ``step``. Only non-positive numbers are exponentiated in the chunked
form (log-decays and their segment sums), and the WKV state is kept in fp32 even under autocast.

The intra-chunk cost grows with ``chunk_len`` (a ``[L, L, K]`` pairwise-decay tensor per head and chunk); on CPU
``chunk_len=16`` measured about 2x faster than 32 for fwd+bwd at B=8, T=200, d=144, so 16 is the default.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.mixers import Mixer, flip_valid, register
from models.state import State, StateSpec

_DIRECTIONS = ("l2r", "r2l", "bi")


def _wkv_dtype(t: torch.Tensor) -> torch.dtype:
    """fp32 for half types; float64 stays float64 (used by reference checks)."""
    return torch.promote_types(t.dtype, torch.float32)


def wkv_chunked(r, k, v, logw, u, state=None, chunk_len: int = 32):
    """Chunked parallel RWKV-6 WKV.

    r, k, v, logw: ``[B, T, H, K]`` (``logw = -exp(d) <= 0``); u: ``[H, K]``; state: ``[B, H, K, K]`` or None.
    Returns ``(o [B, T, H, K], final_state [B, H, K, K])``. Computed in fp32 (or float64 for float64 inputs).
    """
    dt = _wkv_dtype(r)
    r, k, v, logw, u = (t.to(dt) for t in (r, k, v, logw, u))
    B, T, H, K = r.shape
    L = max(1, min(chunk_len, T))
    nc = (T + L - 1) // L
    pad = nc * L - T
    if pad:  # zero keys/values and unit decays past T only touch the (discarded) padded outputs
        r, k, v, logw = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (r, k, v, logw))
    # [B, H, nc, L, K]
    r, k, v, logw = (t.view(B, nc, L, H, K).permute(0, 3, 1, 2, 4) for t in (r, k, v, logw))

    idx = torch.arange(L, device=r.device)
    # lw_prev[t] = logw[t-1] (0 at t=0); lw_next[j] = logw[j+1] (0 at L-1)
    lw_prev = F.pad(logw, (0, 0, 1, 0))[..., :L, :]
    lw_next = F.pad(logw, (0, 0, 0, 1))[..., 1:, :]
    # decay from chunk start to just before t: sum_{s<t} logw_s          [B,H,nc,L,K]
    a_in = torch.cumsum(lw_prev, dim=-2)
    # decay from just after j to chunk end: sum_{s>j} logw_s             [B,H,nc,L,K]
    a_out = torch.flip(torch.cumsum(torch.flip(lw_next, (-2,)), dim=-2), (-2,))
    # total decay over the chunk                                         [B,H,nc,K]
    a_tot = logw.sum(dim=-2)

    # intra-chunk pairwise decay F[t,j] = sum_{j<s<t} logw_s <= 0 as masked segment sums (never a difference of
    # cumulative sums, which loses precision under strong decays). The masked sum over s' runs as one matmul
    # with a lower-triangular ones matrix (faster than cumsum + its flipped backward on CPU).   [B,H,nc,L,L,K]
    s_ge = (idx.view(L, 1) >= idx.view(1, L) + 2).to(dt).view(L, L, 1)  # [s', j]: s' >= j+2 (s' indexes lw_prev)
    tril = (idx.view(L, 1) >= idx.view(1, L)).to(dt)  # [t, s']: s' <= t
    masked = (lw_prev.unsqueeze(-2) * s_ge).flatten(-2)  # [B,H,nc,s',(j,K)]
    seg = (tril @ masked).view(B, H, nc, L, L, K)  # [.., t, j, K]; exactly 0 for j >= t-1
    decay = torch.exp(seg)
    # att[t,j] = sum_k r_t[k] k_j[k] exp(F[t,j,k]) for j < t
    att = ((decay * k.unsqueeze(-3)) @ r.unsqueeze(-1)).squeeze(-1)  # [B,H,nc,L,L]
    att = att * (idx.view(L, 1) > idx.view(1, L)).to(dt)
    o = att @ v  # [B,H,nc,L,K]
    o = o + (r * u.view(1, H, 1, 1, K) * k).sum(-1, keepdim=True) * v  # bonus (current frame)

    # inter-chunk: hand the state over, chunk by chunk
    kv = (k * torch.exp(a_out)).transpose(-1, -2) @ v  # [B,H,nc,K,K]: contribution of each chunk
    w_tot = torch.exp(a_tot).unsqueeze(-1)  # [B,H,nc,K,1]
    S = torch.zeros(B, H, K, K, dtype=dt, device=r.device) if state is None else state.to(dt)
    starts = []
    for c in range(nc):
        starts.append(S)
        S = w_tot[:, :, c] * S + kv[:, :, c]
    S_start = torch.stack(starts, dim=2)  # [B,H,nc,K,K]
    o = o + (r * torch.exp(a_in)) @ S_start

    o = o.permute(0, 2, 3, 1, 4).reshape(B, nc * L, H, K)[:, :T]
    return o, S


def wkv_recurrent(r, k, v, w, u, state):
    """Per-frame RWKV-6 WKV recurrence (the streaming form; torch ops only, no CumSum, no in-place on inputs).

    r, k, v, w: ``[B, T, H, K]`` with ``w = exp(-exp(d))`` in (0, 1); u: ``[H, K]``; state ``[B, H, K, K]``.
    """
    dt = _wkv_dtype(r)
    r, k, v, w, u = (t.to(dt) for t in (r, k, v, w, u))
    S = state.to(dt)
    uk = u.unsqueeze(-1)  # [H,K,1]
    outs = []
    for t in range(r.shape[1]):
        kt, vt, rt = k[:, t], v[:, t], r[:, t]  # [B,H,K]
        kv = kt.unsqueeze(-1) * vt.unsqueeze(-2)  # [B,H,K,K]
        outs.append((rt.unsqueeze(-2) @ (uk * kv + S)).squeeze(-2))  # [B,H,K]
        S = w[:, t].unsqueeze(-1) * S + kv
    return torch.stack(outs, dim=1), S


def default_head_size(d_model: int, preferred: int = 32) -> int:
    """32 when it divides d_model, else the divisor of d_model nearest to 32 (ties: the larger one);
    e.g. d_model=144 -> 36 (4 heads)."""
    divisors = [h for h in range(1, d_model + 1) if d_model % h == 0]
    return min(divisors, key=lambda h: (abs(h - preferred), -h))


class RWKV6TimeMix(nn.Module):
    """One direction of the mixer: RWKV-6 (x060) time-mix with a LayerNorm over the width."""

    def __init__(self, d_model: int, head_size: int = 32, lora_dim: int = 32, decay_lora_dim: int = 64,
                 chunk_len: int = 16, layer_ratio: float = 0.5, ln_eps: float = 64e-5):
        super().__init__()
        if d_model % head_size:
            raise ValueError(f"d_model={d_model} must be a multiple of head_size={head_size}")
        D = d_model
        self.d_model, self.head_size, self.n_head = D, head_size, D // head_size
        self.chunk_len = chunk_len
        r01 = float(layer_ratio)  # x060's layer_id/(n_layer-1): 0 = first layer, 1 = last
        r10 = 1.0 - r01 * 0.9  # x060's 1 - layer_id/n_layer (kept > 0)
        with torch.no_grad():
            ddd = torch.arange(D, dtype=torch.float32) / D
            self.time_maa_x = nn.Parameter(1.0 - ddd.pow(r10))
            self.time_maa_w = nn.Parameter(1.0 - ddd.pow(r10))
            self.time_maa_k = nn.Parameter(1.0 - ddd.pow(r10))
            self.time_maa_v = nn.Parameter(1.0 - (ddd.pow(r10) + 0.3 * r01))
            self.time_maa_r = nn.Parameter(1.0 - ddd.pow(0.5 * r10))
            self.time_maa_g = nn.Parameter(1.0 - ddd.pow(0.5 * r10))
            self.time_maa_w1 = nn.Parameter(torch.empty(D, 5 * lora_dim).uniform_(-1e-4, 1e-4))
            self.time_maa_w2 = nn.Parameter(torch.empty(5, lora_dim, D).uniform_(-0.01, 0.01))
            n = torch.arange(D, dtype=torch.float32)
            self.time_decay = nn.Parameter(-6.0 + 5.0 * (n / max(D - 1, 1)).pow(0.7 + 1.3 * r01))
            self.time_decay_w1 = nn.Parameter(torch.empty(D, decay_lora_dim).uniform_(-1e-4, 1e-4))
            self.time_decay_w2 = nn.Parameter(torch.empty(decay_lora_dim, D).uniform_(-0.01, 0.01))
            zigzag = ((n + 1) % 3 - 1) * 0.1
            self.time_faaaa = nn.Parameter((r01 * (1 - n / max(D - 1, 1)) + zigzag).view(self.n_head, head_size))
        self.receptance = nn.Linear(D, D, bias=False)
        self.key = nn.Linear(D, D, bias=False)
        self.value = nn.Linear(D, D, bias=False)
        self.gate = nn.Linear(D, D, bias=False)
        self.output = nn.Linear(D, D, bias=False)
        self.ln_x = nn.LayerNorm(D, eps=ln_eps)
        with torch.no_grad():  # x060-like scales: small keys and gates
            bound = 1.0 / math.sqrt(D)
            self.key.weight.uniform_(-0.1 * bound, 0.1 * bound)
            self.gate.weight.uniform_(-0.1 * bound, 0.1 * bound)

    # ---- per-frame projections (parallel over time) ----
    def _project(self, x: torch.Tensor, prev: torch.Tensor):
        """x, prev: [B,T,D] (prev = previous frame). Returns r, k, v, g [B,T,D] and d (log-log-decay) [B,T,D]."""
        B, T, D = x.shape
        xx = prev - x
        xxx = x + xx * self.time_maa_x
        m = torch.tanh(xxx @ self.time_maa_w1).view(B, T, 5, -1)  # [B,T,5,lora]
        m = torch.einsum("btfl,fld->fbtd", m, self.time_maa_w2)  # [5,B,T,D]
        mw, mk, mv, mr, mg = m.unbind(0)
        xw = x + xx * (self.time_maa_w + mw)
        xk = x + xx * (self.time_maa_k + mk)
        xv = x + xx * (self.time_maa_v + mv)
        xr = x + xx * (self.time_maa_r + mr)
        xg = x + xx * (self.time_maa_g + mg)
        r = self.receptance(xr)
        k = self.key(xk)
        v = self.value(xv)
        g = F.silu(self.gate(xg))
        d = self.time_decay + torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2
        return r, k, v, g, d

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, _ = t.shape
        return t.reshape(B, T, self.n_head, self.head_size)

    def _finish(self, o: torch.Tensor, g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        B, T = o.shape[:2]
        o = self.ln_x(o.reshape(B, T, self.d_model).to(dtype))
        return self.output(o * g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Causal full-sequence form from a zero state. x: [B,T,D]."""
        prev = F.pad(x, (0, 0, 1, 0))[:, :-1]
        r, k, v, g, d = self._project(x, prev)
        logw = -torch.exp(d.to(_wkv_dtype(d)))
        o, _ = wkv_chunked(self._heads(r), self._heads(k), self._heads(v), self._heads(logw), self.time_faaaa,
                           None, self.chunk_len)
        return self._finish(o, g, x.dtype)

    def step(self, x: torch.Tensor, shift: torch.Tensor, wkv: torch.Tensor):
        """x: [B,T,D]; shift: [B,D] (last frame seen); wkv: [B,H,K,K]. Returns y, shift', wkv'."""
        prev = torch.cat([shift.to(x.dtype).unsqueeze(1), x[:, :-1]], dim=1)
        r, k, v, g, d = self._project(x, prev)
        w = torch.exp(-torch.exp(d.to(_wkv_dtype(d))))
        o, S = wkv_recurrent(self._heads(r), self._heads(k), self._heads(v), self._heads(w), self.time_faaaa, wkv)
        return self._finish(o, g, x.dtype), x[:, -1], S

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        """Naive per-frame recurrence from a zero state (for tests)."""
        B = x.shape[0]
        K = self.head_size
        S0 = torch.zeros(B, self.n_head, K, K, dtype=_wkv_dtype(x), device=x.device)
        return self.step(x, torch.zeros_like(x[:, 0]), S0)[0]


@register("rwkv")
class RWKVMixer(Mixer):
    """Bidirectional RWKV-6 mixer: independent L2R and R2L cores, averaged for ``direction="bi"``."""

    bidirectional = True

    def __init__(self, d_model: int, head_size: int | None = None, lora_dim: int = 32, decay_lora_dim: int = 64,
                 chunk_len: int = 16, layer_ratio: float = 0.5, **options):
        super().__init__(d_model)
        if options:
            raise TypeError(f"unknown rwkv options: {sorted(options)}")
        if head_size is None:
            head_size = default_head_size(d_model)
        kw = dict(head_size=head_size, lora_dim=lora_dim, decay_lora_dim=decay_lora_dim, chunk_len=chunk_len,
                  layer_ratio=layer_ratio)
        self.head_size, self.n_head = head_size, d_model // head_size
        self.l2r = RWKV6TimeMix(d_model, **kw)
        self.r2l = RWKV6TimeMix(d_model, **kw)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, direction: str = "l2r") -> torch.Tensor:
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
        valid = (torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.to(x.device).unsqueeze(1))
        x = torch.where(valid.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
        if direction == "l2r":
            return self.l2r(x)
        lengths = lengths.to(x.device)
        y_r2l = flip_valid(self.r2l(flip_valid(x, lengths)), lengths)
        if direction == "r2l":
            return y_r2l
        return 0.5 * (self.l2r(x) + y_r2l)

    def state_specs(self) -> list[StateSpec]:
        K = self.head_size
        return [StateSpec("shift", (self.d_model,)), StateSpec("wkv", (self.n_head, K, K), torch.float32)]

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        y, shift, wkv = self.l2r.step(x, state["shift"], state["wkv"])
        return y, {"shift": shift, "wkv": wkv}
