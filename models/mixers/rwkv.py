"""RWKV-6 time-mix (x060) as a bidirectional Conformer mixer with direction-specific weights.

Per head (K = head_size), with the state ``S`` indexed ``[key, value]`` and the decay acting on the key axis::

    o_t = r_t (diag(u) k_tᵀ v_t + S_{t-1})
    S_t = diag(w_t) S_{t-1} + k_tᵀ v_t,        w_t = exp(-exp(d_t))

Training uses a chunked parallel form (plain torch, loop-free: the state hand-over between chunks is itself a
decay-weighted sum); ``step`` (what a step graph exports, dynamic chunk length) runs the same math with the whole
call as one block seeded with the carried state (``wkv_block``) and the token-shift branches fused
(``_project_step``); ``wkv_recurrent`` keeps the per-frame recurrence as the reference. Only non-positive numbers are
exponentiated (log-decays and their segment sums, as triangular matmuls, never CumSum), and the WKV state is kept
in fp32 even under autocast.

The intra-chunk cost grows with ``chunk_len`` (a ``[L, L, K]`` pairwise-decay tensor per head and chunk, which
also dominates the memory traffic of a training step), the inter-chunk hand-over with the number of chunks. On this
project's 2-core CPU the shipped flagship (d=144, K=36) runs ``chunk_len=8`` faster than 16 for fwd+bwd by 1.1x
(B=8, T=200) and 1.4-1.7x (the 40k-frame batches its fine-tunes use), for torch inference by 1.1x, and for a
32-frame ORT step call by 1.06x (8 frames after subsampling fill one block instead of half of one); 4 and 32 are
slower (``benchmarks/rwkv_chunk_bench.py``, medians of 5 turns; single runs on this shared machine can invert
a ratio). End to end, ``edgeasr train --init default --config configs/flagship-vtlp-ft.json --max-steps 16
--threads 2`` on a 2 h recipe-2 corpus took 232 s with 16 and 172 s with 8 (1.35x; features and augmentation
included). The output does not depend on it (max abs log-prob difference 1e-5).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgeasr.models.mixers import register
from edgeasr.models.mixers.bidirectional import BidirectionalMixer
from edgeasr.models.mixers.chunk_scan import FULL_SEQUENCE_GROUP, masks, scan_chunk_states
from edgeasr.models.state import State, StateSpec, kept_last

DEFAULT_CHUNK_LEN = 8  # frames per block of the chunked form (see the module docstring for the measurements)
# encoder frames beyond which an eager (torch) step call uses the chunked form: one block costs T^3 per head
# (a streaming call is 2-32 frames; exported step graphs always use the one-block form)
MAX_BLOCK = 64


def _wkv_dtype(t: torch.Tensor) -> torch.dtype:
    """fp32 for half types; float64 stays float64 (used by reference checks)."""
    return torch.promote_types(t.dtype, torch.float32)


@torch.autocast("cpu", enabled=False)  # the recurrence and its state stay fp32 under autocast
@torch.autocast("cuda", enabled=False)
def wkv_chunked(r, k, v, logw, u, state=None, chunk_len: int = 32, group: int = 0):
    """Chunked parallel RWKV-6 WKV, loop-free (also the step form: traceable with a dynamic T).

    r, k, v, logw: ``[B, T, H, K]`` (``logw = -exp(d) <= 0``); u: ``[H, K]``; state: ``[B, H, K, K]`` or None.
    Returns ``(o [B, T, H, K], final_state [B, H, K, K])``. Computed in fp32 (or float64 for float64 inputs).

    Time is padded to a multiple of ``chunk_len`` (zero keys/values and unit decays past T leave outputs and
    state untouched). Within a chunk, pairwise decays are masked segment sums; across chunks, the state each
    chunk starts from is a decay-weighted sum of the incoming state and the earlier chunks' contributions, again
    with segment sums of per-chunk total log-decays. No CumSum, no Python loop over time, and only non-positive
    numbers are exponentiated. ``group`` > 0 hands the state over in two levels (``chunk_scan``): linear-ish in T.
    """
    dt = _wkv_dtype(r)
    r, k, v, logw, u = (t.to(dt) for t in (r, k, v, logw, u))
    B, T, H, K = r.shape
    L = max(1, int(chunk_len))
    pad = (L - T % L) % L
    r, k, v, logw = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (r, k, v, logw))
    nc = (T + pad) // L
    # [B, H, nc, L, K]
    r, k, v, logw = (t.reshape(B, nc, L, H, K).permute(0, 3, 1, 2, 4) for t in (r, k, v, logw))

    incl, below, above = masks(L, r.device, dt)
    a_in = below @ logw  # decay from chunk start to just before t: sum_{s<t} logw_s      [B,H,nc,L,K]
    a_out = above @ logw  # decay from just after j to chunk end: sum_{s>j} logw_s         [B,H,nc,L,K]
    a_tot = logw.sum(dim=-2)  # total decay over the chunk                                 [B,H,nc,K]

    # intra-chunk pairwise decay F[t,j] = sum_{j<s<t} logw_s <= 0 (exactly 0 for j >= t-1)    [B,H,nc,L,L,K]
    masked = (logw.unsqueeze(-2) * below.unsqueeze(-1)).flatten(-2)  # [.., s, (j,K)]: logw_s if s > j
    seg = (below @ masked).reshape(B, H, nc, L, L, K)  # [.., t, j, K]: sum over j < s < t
    att = ((torch.exp(seg) * k.unsqueeze(-3)) @ r.unsqueeze(-1)).squeeze(-1)  # [B,H,nc,L,L]
    o = (att * below) @ v  # j < t only                                                   [B,H,nc,L,K]
    o = o + (r * u.view(1, H, 1, 1, K) * k).sum(-1, keepdim=True) * v  # bonus (current frame)

    # inter-chunk: source e in (incoming state, chunk 0 .. chunk nc-1), target c in (chunk 0 .. nc-1, end);
    # state at target c = sum_{e <= c} exp(sum_{e < e' <= c} a_ext[e']) kvs[e], a_ext = (0, a_tot...)
    kv = (k * torch.exp(a_out)).transpose(-1, -2) @ v  # [B,H,nc,K,K]: contribution of each chunk
    S0 = torch.zeros_like(kv[:, :, :1]) if state is None else state.to(dt).unsqueeze(2)
    kvs = torch.cat([S0, kv], dim=2)  # [B,H,E,K,K]
    a_ext = torch.cat([torch.zeros_like(a_tot[:, :, :1]), a_tot], dim=2)  # [B,H,E,K]
    S_all = scan_chunk_states(kvs, a_ext, group)  # [B,H,E,K,V]
    o = o + (r * torch.exp(a_in)) @ S_all[:, :, :-1]

    o = o.permute(0, 2, 3, 1, 4).reshape(B, nc * L, H, K)[:, :T]
    return o, S_all[:, :, -1]


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


@torch.autocast("cpu", enabled=False)
@torch.autocast("cuda", enabled=False)
def wkv_block(r, k, v, logw, u, state=None, keep=None):
    """The step form of the WKV: the whole call is one block of ``wkv_chunked`` (so no padding, no block reshapes,
    no hand-over between blocks), head-major. r, k, v, logw: ``[B, H, T, K]``; u: ``[H, K]``; state ``[B, H, K, K]``
    or None (zero). Returns ``(o [B, H, T, K], final_state)``; fp32 (float64 for float64 inputs).

    A streaming call spans 2-32 encoder frames, so the ``[T, T, K]`` pairwise decays are small; an unrolled
    recurrence would need a static T (the last chunk of an utterance is shorter) and ONNX's Scan/Loop cost more
    per frame than these few batched MatMuls. Segment sums are matmuls with triangular masks (no CumSum) and only
    non-positive numbers are exponentiated, as in ``wkv_chunked``.

    ``keep`` ``[T]`` (1 for the call's first frames, 0 after; a look-ahead step): the state returned is the one
    after the kept frames only. Unkept frames still produce outputs, but their keys add nothing to that state and
    their decays are 1 (log-decay 0)."""
    dt = _wkv_dtype(r)
    r, k, v, logw, u = (t.to(dt) for t in (r, k, v, logw, u))
    T = r.shape[2]
    _, below, above = masks(T, r.device, dt)
    a_in = below @ logw  # sum_{s<t} logw_s: decay from the call's start to just before t              [B,H,T,K]
    a_out = above @ logw  # sum_{s>j} logw_s: decay from just after j to the call's end               [B,H,T,K]
    # pairwise F[t, j] = sum_{j<s<t} logw_s <= 0 as one broadcast matmul over s with the mask
    # pair[t, j, s] = [j < s < t] (no reshape of a dynamic T: each one costs a chain of shape ops per call)
    pair = below.unsqueeze(1) * below.t().unsqueeze(0)  # [T(t), T(j), T(s)]
    seg = pair @ logw.unsqueeze(2)  # [B,H,T(t),T(j),K]
    att = (torch.exp(seg) * k.unsqueeze(2) * r.unsqueeze(3)).sum(-1) * below  # [B,H,T,T]: j < t only
    o = att @ v + (r * u.unsqueeze(1) * k).sum(-1, keepdim=True) * v  # earlier frames + bonus (current frame)
    if keep is not None:  # the handed-on state ends at the last kept frame
        m = keep.to(dt).view(-1, 1)  # [T,1]
        k_s, logw_s = k * m, logw * m
        a_out = above @ logw_s
    else:
        k_s, logw_s = k, logw
    kv = (k_s * torch.exp(a_out)).transpose(2, 3) @ v  # the call's own contribution to the state      [B,H,K,K]
    if state is None:
        return o, kv
    S = state.to(dt)
    o = o + (r * torch.exp(a_in)) @ S
    a_tot = logw_s.sum(2).unsqueeze(3)  # total decay over the call, on the key axis                  [B,H,K,1]
    return o, torch.exp(a_tot) * S + kv


def default_head_size(d_model: int, preferred: int = 32) -> int:
    """32 when it divides d_model, else the divisor of d_model nearest to 32 (ties: the larger one);
    e.g. d_model=144 -> 36 (4 heads)."""
    divisors = [h for h in range(1, d_model + 1) if d_model % h == 0]
    return min(divisors, key=lambda h: (abs(h - preferred), -h))


class RWKV6TimeMix(nn.Module):
    """One direction of the mixer: RWKV-6 (x060) time-mix with a LayerNorm over the width."""

    def __init__(self, d_model: int, head_size: int = 32, lora_dim: int = 32, decay_lora_dim: int = 64,
                 chunk_len: int = DEFAULT_CHUNK_LEN, layer_ratio: float = 0.5, ln_eps: float = 64e-5):
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

    def forward(self, x: torch.Tensor, block: int | None = None) -> torch.Tensor:
        """Causal full-sequence form from a zero state. x: [B,T,D]; ``block``: frames per block of the chunked form
        (default ``chunk_len``; short sequences of a known length pad less with a smaller one)."""
        prev = F.pad(x, (0, 0, 1, 0))[:, :-1]
        r, k, v, g, d = self._project(x, prev)
        logw = -torch.exp(d.to(_wkv_dtype(d)))
        o, _ = wkv_chunked(self._heads(r), self._heads(k), self._heads(v), self._heads(logw), self.time_faaaa,
                           None, block or self.chunk_len, FULL_SEQUENCE_GROUP)
        return self._finish(o, g, x.dtype)

    def _project_step(self, x: torch.Tensor, prev: torch.Tensor):
        """``_project`` as the step graph wants it (same numbers, fewer and larger ops): the five token-shift
        low-rank branches' second layer as one batched MatMul (a block-diagonal 2-D weight measured no faster on
        ORT and stores 80 % zeros), the five lerps as one broadcast, and r, k, v, log-decay returned head-major
        ``[B, H, T, K]`` for ``wkv_block``. r, k, v, g stay four 2-D MatMuls: their inputs differ, and a stacked
        3-D weight could not be quantized per output channel. Returns r, k, v, logw (head-major), g ``[B, T, D]``."""
        xx = prev - x
        D, H, K = self.d_model, self.n_head, self.head_size
        # weights re-laid per branch / per head (constant-folded at export) so that no activation needs a reshape
        # with a dynamic shape: each costs a chain of shape ops per call in the graph
        w1 = self.time_maa_w1.view(D, 5, -1).transpose(0, 1).unsqueeze(1)  # [5,1,D,lora]
        m = torch.tanh((x + xx * self.time_maa_x).unsqueeze(0) @ w1)  # [5,B,T,lora]
        m = m @ self.time_maa_w2.unsqueeze(1)  # [5,B,T,D]: w, k, v, r, g
        maa = torch.stack([self.time_maa_w, self.time_maa_k, self.time_maa_v, self.time_maa_r, self.time_maa_g])
        xs = x + xx * (maa.view(5, 1, 1, D) + m)  # [5,B,T,D]
        xw, xk, xv, xr, xg = xs.unbind(0)
        w2 = self.time_decay_w2.view(-1, H, K).transpose(0, 1)  # [H,lora,K]
        d = self.time_decay.view(H, 1, K) + torch.tanh(xw @ self.time_decay_w1).unsqueeze(1) @ w2  # [B,H,T,K]
        logw = -torch.exp(d.to(_wkv_dtype(d)))
        r, k, v = (self._heads(t).transpose(1, 2) for t in (self.receptance(xr), self.key(xk), self.value(xv)))
        return r, k, v, logw, F.silu(self.gate(xg))

    def step(self, x: torch.Tensor, shift: torch.Tensor | None, wkv: torch.Tensor | None,
             keep: torch.Tensor | None = None):
        """x: [B,T,D]; shift: [B,D] (last frame seen); wkv: [B,H,K,K]; both None: from the initial (zero) state
        (chunk-bi's R2L). Returns y, shift', wkv'. The whole call is one block (``wkv_block``). ``keep`` (``[T]``
        bool, ``models.state.keep_mask``): a look-ahead call; the states returned are those after the kept frames."""
        first = torch.zeros_like(x[:, :1]) if shift is None else shift.to(x.dtype).unsqueeze(1)
        with_first = torch.cat([first, x], dim=1)
        prev = with_first[:, :-1]
        r, k, v, logw, g = self._project_step(x, prev)
        if keep is None and not torch.jit.is_tracing() and r.shape[2] > MAX_BLOCK:  # eager long calls: blocks
            o, S = wkv_chunked(*(t.transpose(1, 2) for t in (r, k, v, logw)), self.time_faaaa, wkv, self.chunk_len)
            o = o.transpose(1, 2)
        else:
            o, S = wkv_block(r, k, v, logw, self.time_faaaa, wkv, keep)
        last = x[:, -1] if keep is None else kept_last(with_first, keep)
        return self._finish(o.transpose(1, 2), g, x.dtype), last, S

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        """Naive per-frame recurrence from a zero state (for tests)."""
        B = x.shape[0]
        K = self.head_size
        S0 = torch.zeros(B, self.n_head, K, K, dtype=_wkv_dtype(x), device=x.device)
        prev = F.pad(x, (0, 0, 1, 0))[:, :-1]
        r, k, v, g, d = self._project(x, prev)
        w = torch.exp(-torch.exp(d.to(_wkv_dtype(d))))
        o, _ = wkv_recurrent(self._heads(r), self._heads(k), self._heads(v), self._heads(w), self.time_faaaa, S0)
        return self._finish(o, g, x.dtype)


@register("rwkv")
class RWKVMixer(BidirectionalMixer):
    """Bidirectional RWKV-6 mixer: independent L2R and R2L cores, averaged for ``bi`` and ``chunk-bi``."""

    def __init__(self, d_model: int, head_size: int | None = None, lora_dim: int = 32, decay_lora_dim: int = 64,
                 chunk_len: int = DEFAULT_CHUNK_LEN, layer_ratio: float = 0.5, **options):
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

    def state_specs(self) -> list[StateSpec]:
        K = self.head_size
        return [StateSpec("shift", (self.d_model,)), StateSpec("wkv", (self.n_head, K, K), torch.float32)]

    def _step_l2r(self, x: torch.Tensor, state: State, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        y, shift, wkv = self.l2r.step(x, state["shift"], state["wkv"], keep)
        return y, {"shift": shift, "wkv": wkv}

    def _step_r2l(self, x: torch.Tensor) -> torch.Tensor:
        return self.r2l.step(x.flip(1), None, None)[0].flip(1)
