"""Mamba-2 block as a bidirectional Conformer mixer with direction-specific weights.

One direction (``Mamba2Core``)::

    z, xBC, dt = in_proj(u)
    x, B, C    = SiLU(causal depthwise conv1d(xBC))          (single group for B/C)
    dt         = softplus(dt + dt_bias);  A = -exp(A_log)    (per head)
    h_t        = exp(dt_t A) h_{t-1} + dt_t (x_t ⊗ B_t);  y_t = h_t · C_t + D x_t
    out        = out_proj(RMSNorm(y * SiLU(z)))

Training uses the SSD chunked form (``ssd_minimal`` style: segment sums as triangular matmuls, only non-positive
numbers are exponentiated, loop-free: the state hand-over between chunks is itself a segment sum over chunks);
``step`` (what a step graph exports, dynamic chunk length) runs the same math with the whole call as one block
seeded with the carried state (``ssd_block``); ``ssd_recurrent`` keeps the per-frame recurrence as the reference. The SSM state is
kept in fp32 even under autocast.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgeasr.models.mixers import register
from edgeasr.models.mixers.bidirectional import BidirectionalMixer
from edgeasr.models.mixers.chunk_scan import FULL_SEQUENCE_GROUP, decay_weights, masks, scan_chunk_states
from edgeasr.models.state import State, StateSpec, kept_window


# encoder frames beyond which an eager (torch) step call uses the chunked form (one block costs T^2 per head;
# a streaming call is 2-32 frames; exported step graphs always use the one-block form)
MAX_BLOCK = 64


def _ssm_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


@torch.autocast("cpu", enabled=False)  # the recurrence and its state stay fp32 under autocast
@torch.autocast("cuda", enabled=False)
def ssd_chunked(X, dA, Bm, Cm, state=None, chunk_len: int = 32, group: int = 0):
    """SSD chunked scan, loop-free (also the step form: traceable with a dynamic T).

    X: [b, T, H, P] (already multiplied by dt); dA: [b, T, H] (= dt*A <= 0); Bm, Cm: [b, T, N];
    state: [b, H, P, N] or None. Returns ``(Y [b, T, H, P], final_state [b, H, P, N])`` with
    ``h_t = exp(dA_t) h_{t-1} + X_t ⊗ B_t``, ``Y_t = h_t · C_t``.

    Time is padded to a multiple of ``chunk_len`` (zero inputs and unit decays past T change nothing). The state
    each chunk starts from is a decay-weighted sum of the incoming state and the earlier chunks' contributions
    (segment sums of per-chunk total log-decays), so there is no Python loop over time and no CumSum. ``group`` > 0
    hands the state over in two levels (``chunk_scan``), as the full-sequence form does: near-linear in T.
    """
    dt = _ssm_dtype(X)
    X, dA, Bm, Cm = (t.to(dt) for t in (X, dA, Bm, Cm))
    b, T, H, P = X.shape
    N = Bm.shape[-1]
    L = max(1, int(chunk_len))
    pad = (L - T % L) % L
    X = F.pad(X, (0, 0, 0, 0, 0, pad))
    dA = F.pad(dA, (0, 0, 0, pad))
    Bm, Cm = F.pad(Bm, (0, 0, 0, pad)), F.pad(Cm, (0, 0, 0, pad))
    nc = (T + pad) // L
    X = X.reshape(b, nc, L, H, P).permute(0, 3, 1, 2, 4)  # [b,H,nc,L,P]
    dA = dA.reshape(b, nc, L, H).permute(0, 3, 1, 2)  # [b,H,nc,L]
    Bm, Cm = Bm.reshape(b, nc, L, N), Cm.reshape(b, nc, L, N)

    incl, _, above = masks(L, X.device, dt)
    Lmat = decay_weights(dA, L)  # [b,H,nc,L,L]
    CB = Cm @ Bm.transpose(-1, -2)  # [b,nc,L,L]
    Y = (CB.unsqueeze(1) * Lmat) @ X  # diagonal blocks [b,H,nc,L,P]

    dAc = dA.unsqueeze(-1)
    a_cum = (incl @ dAc).squeeze(-1)  # [b,H,nc,L]: decay from chunk start through t
    a_out = (above @ dAc).squeeze(-1)  # decay from just after s to the chunk end: sum_{i>s} dA_i
    # per-chunk state contributions: sum_s exp(a_out_s) X_s ⊗ B_s                       [b,H,nc,P,N]
    states = (X * torch.exp(a_out).unsqueeze(-1)).transpose(-1, -2) @ Bm.unsqueeze(1)
    # sources (incoming state, chunks), targets (chunk starts, end): h_c = sum_{e<=c} decay_weights(a_ext)[c,e] h_e
    a_tot = dA.sum(-1)  # [b,H,nc]
    a_ext = torch.cat([torch.zeros_like(a_tot[:, :, :1]), a_tot], dim=2)  # [b,H,E]
    h0 = torch.zeros_like(states[:, :, :1]) if state is None else state.to(dt).unsqueeze(2)
    h_ext = torch.cat([h0, states], dim=2)  # [b,H,E,P,N]
    # scalar decay per head: one state "row" (K = 1) holding the flattened [P, N] state
    h_all = scan_chunk_states(h_ext.flatten(-2).unsqueeze(-2), a_ext.unsqueeze(-1), group).reshape(b, H, -1, P, N)
    h_start = h_all[:, :, :-1]  # [b,H,nc,P,N]
    # off-diagonal: C_t · (exp(a_cum_t) h_start)
    Y = Y + (Cm.unsqueeze(1) @ h_start.transpose(-1, -2)) * torch.exp(a_cum).unsqueeze(-1)
    Y = Y.permute(0, 2, 3, 1, 4).reshape(b, nc * L, H, P)[:, :T]
    return Y, h_all[:, :, -1]


@torch.autocast("cpu", enabled=False)
@torch.autocast("cuda", enabled=False)
def ssd_block(X, dA, Bm, Cm, state=None, keep=None):
    """The step form of the SSD scan: the whole call is one block of ``ssd_chunked`` (no padding to ``chunk_len``,
    no block reshapes, no hand-over between blocks). Same arguments and result as ``ssd_chunked``; a streaming
    call spans 2-32 encoder frames, so the ``[T, T]`` decay matrix per head is small. ``keep`` ``[T]`` (a
    look-ahead step): the state returned is the one after the kept frames (unkept inputs add nothing, decay 1)."""
    dt = _ssm_dtype(X)
    X, dA, Bm, Cm = (t.to(dt) for t in (X, dA, Bm, Cm))
    X, dA = X.transpose(1, 2), dA.transpose(1, 2)  # head-major: [b,H,T,P], [b,H,T]
    T = X.shape[2]
    incl, _, above = masks(T, X.device, dt)
    Y = ((Cm @ Bm.transpose(1, 2)).unsqueeze(1) * decay_weights(dA)) @ X  # within the call        [b,H,T,P]
    X_s, dA_s = (X, dA) if keep is None else (X * keep.to(dt).view(-1, 1), dA * keep.to(dt))
    a_out = (above @ dA_s.unsqueeze(-1)).transpose(2, 3)  # decay from just after s to the call's end [b,H,1,T]
    h = (X_s.transpose(2, 3) * torch.exp(a_out)) @ Bm.unsqueeze(1)  # the call's contribution       [b,H,P,N]
    if state is not None:
        a_cum = incl @ dA.unsqueeze(-1)  # decay from the call's start through t                      [b,H,T,1]
        S = state.to(dt)
        Y = Y + (Cm.unsqueeze(1) @ S.transpose(2, 3)) * torch.exp(a_cum)
        h = h + torch.exp(dA_s.sum(2)).unsqueeze(-1).unsqueeze(-1) * S
    return Y.transpose(1, 2), h


def ssd_recurrent(X, dA, Bm, Cm, state):
    """Per-frame form of ``ssd_chunked`` (torch ops only; no CumSum; no in-place ops on the state input)."""
    dt = _ssm_dtype(X)
    X, dA, Bm, Cm = (t.to(dt) for t in (X, dA, Bm, Cm))
    h = state.to(dt)
    outs = []
    for t in range(X.shape[1]):
        h = torch.exp(dA[:, t]).unsqueeze(-1).unsqueeze(-1) * h \
            + X[:, t].unsqueeze(-1) * Bm[:, t].unsqueeze(1).unsqueeze(1)
        outs.append((h * Cm[:, t].unsqueeze(1).unsqueeze(1)).sum(-1))  # [b,H,P]
    return torch.stack(outs, dim=1), h


class Mamba2Core(nn.Module):
    """One direction: the Mamba-2 block (``mamba_ssm.modules.mamba2_simple`` layout, ngroups = 1)."""

    def __init__(self, d_model: int, d_state: int = 32, headdim: int = 32, expand: int = 2, d_conv: int = 4,
                 chunk_len: int = 32, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 A_init_range: tuple[float, float] = (1.0, 16.0), norm_eps: float = 1e-5):
        super().__init__()
        d_inner = expand * d_model
        if d_inner % headdim:
            raise ValueError(f"expand*d_model={d_inner} must be a multiple of headdim={headdim}")
        self.d_model, self.d_inner, self.d_state, self.headdim = d_model, d_inner, d_state, headdim
        self.nheads = d_inner // headdim
        self.d_conv, self.chunk_len, self.norm_eps = d_conv, chunk_len, norm_eps
        self.conv_dim = d_inner + 2 * d_state
        self.in_proj = nn.Linear(d_model, 2 * d_inner + 2 * d_state + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, bias=True)
        with torch.no_grad():
            dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_init_floor)
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
            self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(*A_init_range)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm_weight = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def _split(self, u: torch.Tensor):
        zxbcdt = self.in_proj(u)
        return torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)

    def _ssm_inputs(self, xBC: torch.Tensor, dt: torch.Tensor):
        """xBC: conv output before SiLU [B,T,conv_dim]; dt raw [B,T,H]."""
        B_, T = xBC.shape[:2]
        xBC = F.silu(xBC)
        x, Bm, Cm = torch.split(xBC, [self.d_inner, self.d_state, self.d_state], dim=-1)
        fdt = _ssm_dtype(dt)
        dt = F.softplus(dt.to(fdt) + self.dt_bias)  # [B,T,H]
        A = -torch.exp(self.A_log.to(fdt))  # [H]
        x = x.reshape(B_, T, self.nheads, self.headdim)
        X = x.to(fdt) * dt.unsqueeze(-1)
        return x, X, dt * A, Bm, Cm

    def _finish(self, y: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        B_, T = y.shape[:2]
        y = y + self.D.to(y.dtype).unsqueeze(-1) * x.to(y.dtype)
        y = y.reshape(B_, T, self.d_inner).to(z.dtype)
        # gated RMSNorm (norm after gate), plain ops
        y = y * F.silu(z)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.norm_eps) * self.norm_weight
        return self.out_proj(y)

    def forward(self, u: torch.Tensor, block: int | None = None) -> torch.Tensor:
        """Causal full-sequence form from a zero state. u: [B,T,D]; ``block``: frames per block of the SSD form
        (default ``chunk_len``; short sequences of a known length pad less with a smaller one)."""
        z, xBC, dt = self._split(u)
        xBC = self.conv1d(F.pad(xBC.transpose(1, 2), (self.d_conv - 1, 0))).transpose(1, 2)
        x, X, dA, Bm, Cm = self._ssm_inputs(xBC, dt)
        y, _ = ssd_chunked(X, dA, Bm, Cm, None, block or self.chunk_len, FULL_SEQUENCE_GROUP)
        return self._finish(y, x, z)

    def step(self, u: torch.Tensor, conv: torch.Tensor | None, ssm: torch.Tensor | None,
             keep: torch.Tensor | None = None):
        """u: [B,T,D]; conv: [B,conv_dim,d_conv-1] (last pre-conv inputs); ssm: [B,H,P,N]; both None: from the
        initial (zero) state (chunk-bi's R2L). The whole call is one block of the SSD form (``ssd_block``).
        ``keep`` (``[T]`` bool): a look-ahead call; the states returned are those after the kept frames."""
        z, xBC, dt = self._split(u)
        xBC = xBC.transpose(1, 2)
        if conv is None:
            full = F.pad(xBC, (self.d_conv - 1, 0))
        else:
            full = torch.cat([conv.to(xBC.dtype), xBC], dim=2)  # [B,C,d_conv-1+T]
        xc = self.conv1d(full).transpose(1, 2)  # [B,T,C]
        new_conv = full[:, :, full.shape[2] - (self.d_conv - 1):] if keep is None \
            else kept_window(full, keep, self.d_conv - 1, dim=2)
        x, X, dA, Bm, Cm = self._ssm_inputs(xc, dt)
        if keep is None and not torch.jit.is_tracing() and X.shape[1] > MAX_BLOCK:  # eager long calls: blocks
            y, h = ssd_chunked(X, dA, Bm, Cm, ssm, self.chunk_len)
        else:
            y, h = ssd_block(X, dA, Bm, Cm, ssm, keep)
        return self._finish(y, x, z), new_conv, h

    def _reference(self, u: torch.Tensor) -> torch.Tensor:
        """Naive per-frame recurrence from a zero state (for tests)."""
        B_ = u.shape[0]
        conv = torch.zeros(B_, self.conv_dim, self.d_conv - 1, dtype=u.dtype, device=u.device)
        ssm = torch.zeros(B_, self.nheads, self.headdim, self.d_state, dtype=_ssm_dtype(u), device=u.device)
        z, xBC, dt = self._split(u)
        xc = self.conv1d(torch.cat([conv, xBC.transpose(1, 2)], dim=2)).transpose(1, 2)
        x, X, dA, Bm, Cm = self._ssm_inputs(xc, dt)
        return self._finish(ssd_recurrent(X, dA, Bm, Cm, ssm)[0], x, z)


@register("mamba2")
class Mamba2Mixer(BidirectionalMixer):
    """Bidirectional Mamba-2 mixer: independent L2R and R2L cores, averaged for ``bi`` and ``chunk-bi``."""

    def __init__(self, d_model: int, d_state: int = 32, headdim: int = 32, expand: int = 2, d_conv: int = 4,
                 chunk_len: int = 32, **options):
        super().__init__(d_model)
        kw = dict(d_state=d_state, headdim=headdim, expand=expand, d_conv=d_conv, chunk_len=chunk_len, **options)
        self.l2r = Mamba2Core(d_model, **kw)
        self.r2l = Mamba2Core(d_model, **kw)

    def state_specs(self) -> list[StateSpec]:
        c = self.l2r
        return [StateSpec("conv", (c.conv_dim, c.d_conv - 1)),
                StateSpec("ssm", (c.nheads, c.headdim, c.d_state), torch.float32)]

    def _step_l2r(self, x: torch.Tensor, state: State, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        y, conv, ssm = self.l2r.step(x, state["conv"], state["ssm"], keep)
        return y, {"conv": conv, "ssm": ssm}

    def _step_r2l(self, x: torch.Tensor) -> torch.Tensor:
        return self.r2l.step(x.flip(1), None, None)[0].flip(1)
