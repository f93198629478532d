"""Conformer encoder with a pluggable mixer and a CTC head, in a full form and an explicit streaming step form.

Block: FFN/2 -> mixer -> conv module -> FFN/2 -> LayerNorm. In a stream-capable (``causal``) model the
subsampling and the conv module only look back, norms are per frame, so ``step`` over any chunking equals
``forward`` in ``l2r`` mode. Step chunks are counted in fbank frames and must be a multiple of the
subsampling factor (4): one step input of 4k frames gives k encoder frames.

In ``chunk-bi`` mode (bidirectional mixers) ``step`` also runs each layer's R2L over the encoder frames of the call
from its initial state, so it equals ``forward`` in ``chunk-bi`` when fed exactly ``chunk_frames`` fbank frames per
call, the last chunk of an utterance zero-padded only up to a multiple of 4 (encoder frame k reads fbank frames
<= 4k, so that padding adds no encoder frame).

Strict chunks (seed 001): with ``strict_chunk_frames`` set (or, in training, drawn from ``cfg.strict_chunk_ms``)
``forward`` runs every chunk of that many fbank frames alone, as a batch of short utterances, and joins their
outputs: no state and no context crosses a chunk boundary. This is the torch form of running the full ONNX graph
on each chunk (``edgeasr bench --test``'s ``chunk`` mode).
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn

from edgeasr.models.config import CHUNK_BI, SUBSAMPLING, EncoderConfig
from edgeasr.models.dirdrop import (DEFAULT_FRAME_SHIFT_MS, check_chunk_frames, check_lookahead_frames, chunked,
                                    draw_chunk_bi, draw_lookahead, inference_directions, mode_string,
                                    parse_lookahead, parse_mode, parse_strict, training_directions)
from edgeasr.models.mixers import build_mixer
from edgeasr.models.state import State, StateSpec, initial_state, keep_mask, kept_window


def strict_chunk_frames(ms: float, frame_shift_ms: float = DEFAULT_FRAME_SHIFT_MS) -> int:
    """A strict chunk of ``ms`` in fbank frames: whole encoder frames (a multiple of 4), at least one."""
    return max(1, round(ms / (frame_shift_ms * SUBSAMPLING))) * SUBSAMPLING


def split_chunks(x: torch.Tensor, x_lens: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T, F] -> [B * n, c, F] chunks of ``c`` frames (zero-padded to n * c) and each chunk's valid length.
    A chunk past an utterance's end gets length ``c``: its outputs lie beyond the utterance's output length and
    are dropped, and a zero length would only make masks empty."""
    B, T, Fd = x.shape
    n = max(1, -(-T // c))
    x = F.pad(x, (0, 0, 0, n * c - T)).reshape(B * n, c, Fd)
    lens = (x_lens[:, None] - torch.arange(n, device=x.device)[None, :] * c).clamp(0, c)
    return x, torch.where(lens > 0, lens, torch.full_like(lens, c)).reshape(B * n)


def time_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """[B, T, 1] float mask: 1 on valid frames."""
    return (torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]).unsqueeze(-1).float()


class CausalConv1d(nn.Module):
    """Conv1d over [B, T, C] that, when causal, looks back only; its step form caches the last K-1 inputs."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, causal: bool = True):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, groups=groups)
        self.kernel, self.stride, self.causal, self.c_in = kernel, stride, causal, c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)
        if self.causal:
            x = F.pad(x, (self.kernel - 1, 0))
        else:
            x = F.pad(x, ((self.kernel - 1) // 2, self.kernel // 2))
        return self.conv(x).transpose(1, 2)

    def state_specs(self) -> list[StateSpec]:
        return [StateSpec("cache", (self.kernel - 1, self.c_in))]

    def step(self, x: torch.Tensor, state: State, kept: int | None = None) -> tuple[torch.Tensor, State]:
        """``kept``: a look-ahead call; the cache handed on ends at the ``kept``-th input frame."""
        full = torch.cat([state["cache"], x], dim=1)
        y = self.conv(full.transpose(1, 2)).transpose(1, 2)
        if kept is not None:
            return y, {"cache": kept_window(full, keep_mask(x, kept), self.kernel - 1)}
        return y, {"cache": full[:, full.shape[1] - (self.kernel - 1):]}


class Subsampling(nn.Module):
    """4x time subsampling with two stride-2 convolutions (the int8 recipe quantizes these)."""

    def __init__(self, n_mels: int, d_model: int, causal: bool):
        super().__init__()
        self.conv1 = CausalConv1d(n_mels, d_model, 3, stride=2, causal=causal)
        self.conv2 = CausalConv1d(d_model, d_model, 3, stride=2, causal=causal)
        self.out = nn.Linear(d_model, d_model)

    @staticmethod
    def out_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return (lengths + 3) // 4

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = x * time_mask(lengths, x.shape[1])
        x = F.silu(self.conv1(x))
        x = x * time_mask((lengths + 1) // 2, x.shape[1])
        x = F.silu(self.conv2(x))
        return self.out(x)

    def state_specs(self) -> list[StateSpec]:
        return [s.prefixed("conv1") for s in self.conv1.state_specs()] + \
               [s.prefixed("conv2") for s in self.conv2.state_specs()]

    def step(self, x: torch.Tensor, state: State, kept: int | None = None) -> tuple[torch.Tensor, State]:
        """``kept``: fbank frames of a look-ahead call whose caches are handed on (a multiple of 4)."""
        half = None if kept is None else kept // 2
        h, s1 = self.conv1.step(x, {"cache": state["conv1.cache"]}, kept)
        h, s2 = self.conv2.step(F.silu(h), {"cache": state["conv2.cache"]}, half)
        return self.out(F.silu(h)), {"conv1.cache": s1["cache"], "conv2.cache": s2["cache"]}


class FeedForward(nn.Module):
    def __init__(self, d: int, mult: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d * mult), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(d * mult, d), nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


class ConvModule(nn.Module):
    """Pointwise -> GLU -> depthwise (causal when stream-capable) -> LayerNorm -> SiLU -> pointwise.

    LayerNorm instead of BatchNorm: per-frame, so padding and chunking cannot change it."""

    def __init__(self, d: int, kernel: int, dropout: float, causal: bool):
        super().__init__()
        self.norm_in = nn.LayerNorm(d)
        self.pw1 = nn.Linear(d, 2 * d)
        self.dw = CausalConv1d(d, d, kernel, groups=d, causal=causal)
        self.norm = nn.LayerNorm(d)
        self.pw2 = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = F.glu(self.pw1(self.norm_in(x)), dim=-1) * mask  # padding must not leak into valid frames
        h = self.dw(h)
        return self.drop(self.pw2(F.silu(self.norm(h))))

    def state_specs(self) -> list[StateSpec]:
        return [s.prefixed("dw") for s in self.dw.state_specs()]

    def step(self, x: torch.Tensor, state: State, kept: int | None = None) -> tuple[torch.Tensor, State]:
        h = F.glu(self.pw1(self.norm_in(x)), dim=-1)
        h, s = self.dw.step(h, {"cache": state["dw.cache"]}, kept)
        return self.pw2(F.silu(self.norm(h))), {"dw.cache": s["cache"]}


class ConformerBlock(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d = cfg.d_model
        self.ff1 = FeedForward(d, cfg.ff_mult, cfg.dropout)
        self.mixer_norm = nn.LayerNorm(d)
        self.mixer = build_mixer(cfg.mixer, d, cfg.mixer_options)
        self.mixer_drop = nn.Dropout(cfg.dropout)
        self.conv = ConvModule(d, cfg.conv_kernel, cfg.dropout, cfg.causal)
        self.ff2 = FeedForward(d, cfg.ff_mult, cfg.dropout)
        self.norm_out = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor, direction: str,
                chunk: int | None = None, lookahead: int = 0) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        # only the bidirectional mixers take a chunk (chunk-* directions never reach the others)
        args = (direction, chunk, *((lookahead,) if lookahead else ())) if direction.startswith("chunk-") \
            else (direction,)
        x = x + self.mixer_drop(self.mixer(self.mixer_norm(x), lengths, *args))
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ff2(x)
        return self.norm_out(x)

    def state_specs(self) -> list[StateSpec]:
        return [s.prefixed("mixer") for s in self.mixer.state_specs()] + \
               [s.prefixed("conv") for s in self.conv.state_specs()]

    def step(self, x: torch.Tensor, state: State, direction: str = "l2r",
             kept: int | None = None) -> tuple[torch.Tensor, State]:
        """``kept``: encoder frames of a look-ahead call (chunk-bi) after which the states are handed on."""
        x = x + 0.5 * self.ff1(x)
        args = (direction,) if direction != "l2r" else ()  # only the bidirectional mixers' step takes chunk-bi
        kw = {} if kept is None else {"keep": keep_mask(x, kept)}
        h, ms = self.mixer.step(self.mixer_norm(x), _sub(state, "mixer"), *args, **kw)
        x = x + h
        h, cs = self.conv.step(x, _sub(state, "conv"), kept)
        x = x + h
        x = x + 0.5 * self.ff2(x)
        return self.norm_out(x), {**_pre(ms, "mixer"), **_pre(cs, "conv")}


def _sub(state: State, prefix: str) -> State:
    p = prefix + "."
    return {k[len(p):]: v for k, v in state.items() if k.startswith(p)}


def _pre(state: State, prefix: str) -> State:
    return {f"{prefix}.{k}": v for k, v in state.items()}


class Encoder(nn.Module):
    """Fbank [B, T, n_mels] -> CTC log-probs [B, ceil(T/4), V]. Feature normalisation is part of the model
    (buffers from training-set statistics), so every exported graph takes raw fbank."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("feat_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("feat_std", torch.ones(cfg.n_mels))
        if cfg.input_floor_dbfs is not None:  # the floor noise's log-mel, set in training: noise_floor()
            self.register_buffer("feat_floor", torch.full((cfg.n_mels,), -30.0))
        self.subsampling = Subsampling(cfg.n_mels, cfg.d_model, cfg.causal)
        self.layers = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.n_layers))
        self.ctc = nn.Linear(cfg.d_model, cfg.vocab_size)
        self.bidirectional = self.layers[0].mixer.bidirectional
        self.direction = cfg.direction
        self.chunk_frames: int | None = None  # fbank frames per chunk in chunk-bi mode
        self.lookahead_frames = 0  # chunk-bi: fbank frames of the next chunk each chunk's R2L also reads
        self.frame_shift_ms = DEFAULT_FRAME_SHIFT_MS  # of the training features; load_checkpoint sets it
        self.strict_chunk_frames: int | None = None  # inference in strict chunks of this many fbank frames
        self._rng = random.Random(0)

    def set_direction(self, mode: str, chunk_frames: int | None = None, lookahead_frames: int | None = None) -> None:
        """Inference mode: ``l2r``, ``bi``, ``alt`` or ``chunk-bi`` with ``chunk_frames`` fbank frames per chunk;
        ``mode`` may also be a mode string such as ``chunk-bi:640ms`` (``models.dirdrop.parse_mode``). A chunk-bi
        chunk size is remembered, so ``set_direction(enc.direction)`` restores a chunk-bi mode. ValueError (one
        line) for an unknown mode, chunk-bi on a unidirectional mixer, or a missing or bad chunk size.
        ``strict:<ms>ms`` runs every chunk alone (``strict_chunk_frames``) in the trained direction; any other mode
        ends strict chunking. A look-ahead (``chunk-bi:640ms+160ms`` or ``lookahead_frames``) is remembered with
        the chunk size; a mode string with a chunk size and no ``+`` sets it to 0, any other mode ends it."""
        strict = parse_strict(mode, self.frame_shift_ms)
        self.strict_chunk_frames = strict
        if strict is not None:
            self.direction = self.cfg.direction
            return
        parsed_la = parse_lookahead(mode, self.frame_shift_ms) if ":" in mode else None
        mode, parsed = parse_mode(mode, self.frame_shift_ms)
        if parsed is not None and chunk_frames is not None and parsed != chunk_frames:
            raise ValueError(f"two chunk sizes given: {parsed} (mode string) and {chunk_frames} fbank frames")
        inference_directions(mode, self.cfg.n_layers, self.bidirectional)  # validates
        if mode == CHUNK_BI:
            given = parsed if parsed is not None else chunk_frames
            self.chunk_frames = check_chunk_frames(given if given is not None else self.chunk_frames)
            la = lookahead_frames if lookahead_frames is not None else parsed_la
            self.lookahead_frames = check_lookahead_frames(la if la is not None else self.lookahead_frames)
        elif lookahead_frames:
            raise ValueError(f"only {CHUNK_BI} takes a look-ahead, not {mode!r}")
        else:
            self.lookahead_frames = 0
        self.direction = mode

    @property
    def mode(self) -> str:
        """The current inference mode as a mode string (``chunk-bi:640ms+160ms``, ``strict:640ms``, ``bi``...)."""
        if self.strict_chunk_frames is not None:
            return f"strict:{self.strict_chunk_frames * self.frame_shift_ms:g}ms"
        return mode_string(self.direction, self.chunk_frames, self.lookahead_frames, self.frame_shift_ms)

    def _plan(self) -> tuple[list[str], int | None, int]:
        """Per-layer directions of this forward pass and, for chunk directions, the chunk and the training
        look-ahead in encoder frames.

        Training a bidirectional model in ``bi`` draws DirDrop's per-layer plan and, with probability
        ``cfg.chunk_bi_p``, runs the pass in chunk-bi with a chunk from ``cfg.chunk_bi_ms``
        (``models.dirdrop.chunked``: a dropped R2L leaves ``l2r``, a dropped L2R leaves ``chunk-r2l``)."""
        n, cfg = self.cfg.n_layers, self.cfg
        if self.training and self.bidirectional and self.direction == "bi":
            plan = training_directions(n, cfg.dirdrop, cfg.dirdrop_p, self._rng) if cfg.dirdrop != "none" \
                else ["bi"] * n
            chunk = draw_chunk_bi(cfg.chunk_bi_p, cfg.chunk_bi_ms, self.frame_shift_ms, self._rng)
            if chunk is None:
                return plan, None, 0
            return chunked(plan), chunk, draw_lookahead(cfg.chunk_bi_lookahead_ms, self.frame_shift_ms, self._rng)
        plan = inference_directions(self.direction, n, self.bidirectional)
        return plan, (self.chunk_frames // self.cfg.subsampling if self.direction == CHUNK_BI else None), 0

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.input_floor_dbfs is not None:
            # logaddexp(x, floor) as max + softplus(-|diff|): plain ONNX ops (Max, Abs, Softplus) on every backend
            x = torch.maximum(x, self.feat_floor) + F.softplus(-(x - self.feat_floor).abs())
        return (x - self.feat_mean) / self.feat_std

    def _strict_chunk(self) -> int | None:
        if self.training and self.cfg.strict_chunk_ms:
            return strict_chunk_frames(self._rng.choice(list(self.cfg.strict_chunk_ms)), self.frame_shift_ms)
        return self.strict_chunk_frames

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor):
        """Returns (logprobs [B,T',V], out_lens [B], encoder_out [B,T',D])."""
        if self.lookahead_frames and self.direction == CHUNK_BI and not self.training:
            return self._forward_lookahead(x, x_lens)
        c = self._strict_chunk()
        if c is None:
            return self._forward(x, x_lens)
        B = x.shape[0]
        logprobs, _, h = self._forward(*split_chunks(x, x_lens, c))
        join = lambda t: t.reshape(B, -1, t.shape[-1])  # noqa: E731  chunk outputs back to back per utterance
        return join(logprobs), Subsampling.out_lengths(x_lens), join(h)

    def _forward(self, x: torch.Tensor, x_lens: torch.Tensor):
        h = self.subsampling(self.normalize(x), x_lens)
        lens = Subsampling.out_lengths(x_lens)
        mask = time_mask(lens, h.shape[1])
        plan, chunk, lookahead = self._plan()
        for layer, direction in zip(self.layers, plan):
            h = layer(h, lens, mask, direction, chunk, lookahead)
        return F.log_softmax(self.ctc(h), dim=-1), lens, h

    @torch.no_grad()
    def _forward_lookahead(self, x: torch.Tensor, x_lens: torch.Tensor):
        """chunk-bi with a look-ahead, as a runtime streams it: per utterance, call after call of ``chunk_frames +
        lookahead_frames`` fbank frames that keep the first ``chunk_frames`` (states handed on from there, their
        outputs emitted), then one last call over what is left (all of it emitted; zero-padded to a multiple of 4,
        which adds no encoder frame). The utterances still in full calls run as one batch; each last call runs
        alone (its length is the utterance's own). An evaluation form, not a training one: a layer's look-ahead
        frames depend on that layer's state at the chunk's end, so the calls run one after another."""
        C, R, sub = self.chunk_frames, self.lookahead_frames, SUBSAMPLING
        lens = Subsampling.out_lengths(x_lens)
        T_out = int(lens.max()) if len(lens) else 0
        lp_all = x.new_zeros(x.shape[0], T_out, self.cfg.vocab_size)
        h_all = x.new_zeros(x.shape[0], T_out, self.cfg.d_model)
        T = [int(t) for t in x_lens]
        state = self.initial_state(x.shape[0], x.device)
        rows = list(range(x.shape[0]))  # utterances with frames left, and their rows of ``state``
        pos = 0
        while rows:
            full = [i for i, b in enumerate(rows) if T[b] - pos >= C + R]
            for i, b in enumerate(rows):  # last calls: whatever is left, all of it emitted
                if T[b] - pos < C + R and pos < T[b]:
                    rest = F.pad(x[b:b + 1, pos:T[b]], (0, 0, 0, -(T[b] - pos) % sub))
                    lp, h, _ = self.step(rest, {k: v[i:i + 1] for k, v in state.items()})
                    a, e = pos // sub, int(lens[b])
                    lp_all[b, a:e] = lp[0, :e - a]
                    h_all[b, a:e] = h[0, :e - a]
            if not full:
                break
            keep = torch.tensor(full, device=x.device)
            state = {k: v.index_select(0, keep) for k, v in state.items()}
            rows = [rows[i] for i in full]
            idx = torch.tensor(rows, device=x.device)
            lp, h, state = self.step(x.index_select(0, idx)[:, pos:pos + C + R], state)
            lp_all[idx, pos // sub:(pos + C) // sub] = lp[:, :C // sub]
            h_all[idx, pos // sub:(pos + C) // sub] = h[:, :C // sub]
            pos += C
        return lp_all, lens, h_all

    # --- streaming -------------------------------------------------------------------------------------
    def state_specs(self) -> list[StateSpec]:
        specs = [s.prefixed("subsampling") for s in self.subsampling.state_specs()]
        for i, layer in enumerate(self.layers):
            specs += [s.prefixed(f"layers.{i}") for s in layer.state_specs()]
        return specs

    def initial_state(self, batch: int, device=None) -> State:
        return initial_state(self.state_specs(), batch, device)

    def step(self, x: torch.Tensor, state: State):
        """One chunk of fbank frames (T a multiple of 4) with the carried state: L2R, or in chunk-bi mode one whole
        chunk (``chunk_frames``; the utterance's last may be shorter). Every other mode streams as L2R.
        With a look-ahead (chunk-bi), a call holds the chunk and then up to ``lookahead_frames`` of the next one:
        outputs for all of them, states as after the chunk's ``chunk_frames`` alone.
        Returns (logprobs [B,T/4,V], encoder_out [B,T/4,D], next state)."""
        if not self.cfg.causal:
            raise ValueError("this model is not stream-capable (trained with causal=False)")
        direction = CHUNK_BI if self.direction == CHUNK_BI else "l2r"
        kept = self.chunk_frames if direction == CHUNK_BI and self.lookahead_frames else None
        h, ss = self.subsampling.step(self.normalize(x), _sub(state, "subsampling"), kept)
        new = _pre(ss, "subsampling")
        kept_enc = None if kept is None else kept // SUBSAMPLING
        for i, layer in enumerate(self.layers):
            h, ls = layer.step(h, _sub(state, f"layers.{i}"), direction, kept_enc)
            new.update(_pre(ls, f"layers.{i}"))
        return F.log_softmax(self.ctc(h), dim=-1), h, new


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
