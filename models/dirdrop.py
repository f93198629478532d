"""Direction Dropout (seed 000), the inference direction modes and the per-layer direction plan of each.

During training each bidirectional layer drops one direction with probability p, so the trained model still
works when a direction is missing at inference: ``r2l`` drops only R2L (keeps L2R streaming strong), ``both``
drops either direction with equal odds (also enables R2L-only and alternating decoding).

Modes: ``l2r`` (streamable), ``bi``, ``alt`` (even layers L2R, odd R2L) and ``chunk-bi`` (streamable: L2R carried
across the stream, R2L within each chunk of C encoder frames from its initial state, averaged). ``chunk-bi`` needs a
chunk size; as a user-facing string it is ``chunk-bi:640ms`` (``parse_mode``). ``chunk-bi:640ms+160ms`` adds a
look-ahead: each chunk's R2L also reads the next 160 ms (latency chunk + look-ahead), with every layer's look-ahead
frames recomputed in the next chunk, so no context leaks further (``parse_lookahead``; inference only).

Per-layer directions a mixer sees: ``l2r``, ``r2l``, ``bi``, ``chunk-bi`` and ``chunk-r2l`` (R2L within chunks only).
"""
from __future__ import annotations

import operator
import random
import re

from edgeasr.models.config import CHUNK_BI, DIRECTIONS, SUBSAMPLING

DEFAULT_FRAME_SHIFT_MS = 10.0  # fbank frame shift of every shipped config


def _ms_frames(s: str, ms: str, frame_shift_ms: float, what: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)ms", ms.strip())
    if not m:
        raise ValueError(f"bad {what} in {s!r}: expected milliseconds, e.g. {CHUNK_BI}:640ms+160ms")
    frames = float(m.group(1)) / frame_shift_ms
    if frames != round(frames):
        raise ValueError(f"{s!r}: {m.group(1)} ms is not a whole number of {frame_shift_ms:g} ms fbank frames")
    return int(round(frames))


def parse_mode(s: str, frame_shift_ms: float = DEFAULT_FRAME_SHIFT_MS) -> tuple[str, int | None]:
    """``"l2r"`` -> ``("l2r", None)``; ``"chunk-bi:640ms"`` -> ``("chunk-bi", 64)`` (chunk in fbank frames at
    ``frame_shift_ms``); ``"chunk-bi"`` -> ``("chunk-bi", None)`` (size given elsewhere). A look-ahead suffix
    (``chunk-bi:640ms+160ms``) is checked here and read by ``parse_lookahead``. ValueError on anything else, or a
    chunk that is not a positive whole number of frames and a multiple of the subsampling (4)."""
    parse_lookahead(s, frame_shift_ms)
    s = s.partition("+")[0]
    mode, _, size = s.strip().partition(":")
    if mode in DIRECTIONS and not size:
        return mode, None
    if mode != CHUNK_BI:
        raise ValueError(f"unknown direction mode {s!r}; choose {', '.join(DIRECTIONS)} or {CHUNK_BI}:<ms>ms "
                         f"(e.g. {CHUNK_BI}:640ms)")
    if not size:
        return mode, None
    return mode, check_chunk_frames(_ms_frames(s, size, frame_shift_ms, "chunk size"))


def parse_lookahead(s: str, frame_shift_ms: float = DEFAULT_FRAME_SHIFT_MS) -> int:
    """The look-ahead of a mode string in fbank frames: ``"chunk-bi:640ms+160ms"`` -> 16; 0 without a ``+``.
    Only a chunk-bi mode with a chunk size takes one, and it must be a multiple of the subsampling (4 frames)."""
    head, plus, la = s.strip().partition("+")
    if not plus:
        return 0
    if not head.startswith(CHUNK_BI + ":"):
        raise ValueError(f"{s!r}: only {CHUNK_BI} with a chunk size takes a look-ahead, e.g. {CHUNK_BI}:640ms+160ms")
    return check_lookahead_frames(_ms_frames(s, la, frame_shift_ms, "look-ahead"))


def check_lookahead_frames(frames: int) -> int:
    """A look-ahead in fbank frames: a non-negative multiple of the subsampling, else ValueError."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 0 or frames % SUBSAMPLING:
        raise ValueError(f"look-ahead must be a non-negative multiple of {SUBSAMPLING} fbank frames "
                         f"({SUBSAMPLING * DEFAULT_FRAME_SHIFT_MS:g} ms at {DEFAULT_FRAME_SHIFT_MS:g} ms frames), "
                         f"got {frames!r}")
    return frames


def mode_string(mode: str, chunk_frames: int | None, lookahead_frames: int = 0,
                frame_shift_ms: float = DEFAULT_FRAME_SHIFT_MS) -> str:
    """The user-facing mode string: ``chunk-bi:640ms``, ``chunk-bi:640ms+160ms``, or the plain mode."""
    if mode != CHUNK_BI or not chunk_frames:
        return mode
    la = f"+{lookahead_frames * frame_shift_ms:g}ms" if lookahead_frames else ""
    return f"{CHUNK_BI}:{chunk_frames * frame_shift_ms:g}ms{la}"


STRICT = "strict"  # strict chunks (seed 001): "strict:640ms", every chunk encoded alone (torch reference only)


def parse_strict(s: str, frame_shift_ms: float = DEFAULT_FRAME_SHIFT_MS) -> int | None:
    """``"strict:640ms"`` -> 64 (fbank frames per chunk); None for any other mode string. ValueError for a
    ``strict`` mode without a whole number of encoder frames."""
    mode, _, size = s.strip().partition(":")
    if mode != STRICT:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)ms", size.strip())
    frames = float(m.group(1)) / frame_shift_ms if m else None
    if frames is None or frames <= 0 or frames != round(frames) or round(frames) % SUBSAMPLING:
        raise ValueError(f"bad strict chunk in {s!r}: expected a multiple of "
                         f"{SUBSAMPLING * frame_shift_ms:g} ms, e.g. {STRICT}:640ms")
    return int(round(frames))


def check_chunk_frames(chunk_frames: int | None) -> int:
    """A chunk-bi chunk size in fbank frames: a positive multiple of the subsampling, else ValueError."""
    if chunk_frames is None:
        raise ValueError(f"direction {CHUNK_BI!r} needs a chunk size (e.g. {CHUNK_BI}:640ms or chunk_frames=64)")
    try:
        n = operator.index(chunk_frames)  # ints, numpy ints; not floats or strings
    except TypeError:
        n = None
    if n is None or isinstance(chunk_frames, bool) or n <= 0 or n % SUBSAMPLING:
        raise ValueError(f"chunk-bi chunk must be a positive multiple of {SUBSAMPLING} fbank frames "
                         f"({SUBSAMPLING * DEFAULT_FRAME_SHIFT_MS:g} ms at {DEFAULT_FRAME_SHIFT_MS:g} ms frames), "
                         f"got {chunk_frames!r}")
    return int(n)


def inference_directions(mode: str, n_layers: int, bidirectional: bool) -> list[str]:
    """Per-layer mixer direction for an inference mode: l2r (streamable), bi, alt (even L2R, odd R2L), chunk-bi."""
    if mode == "l2r":
        return ["l2r"] * n_layers
    if mode == "bi":
        return ["bi"] * n_layers
    if mode in ("alt", CHUNK_BI) and not bidirectional:
        raise ValueError(f"direction {mode!r} needs a bidirectional mixer (rwkv, mamba2)")
    if mode == "alt":
        return ["l2r" if i % 2 == 0 else "r2l" for i in range(n_layers)]
    if mode == CHUNK_BI:
        return [CHUNK_BI] * n_layers
    raise ValueError(f"unknown direction mode {mode!r}; choose {', '.join(DIRECTIONS)} or {CHUNK_BI}")


def training_directions(n_layers: int, variant: str, p: float, rng: random.Random) -> list[str]:
    """Directions for one training step of a bidirectional model (mode bi) under DirDrop."""
    plan = []
    for _ in range(n_layers):
        if variant == "none" or rng.random() >= p:
            plan.append("bi")
        elif variant == "r2l":
            plan.append("l2r")  # R2L dropped, L2R kept
        else:
            plan.append("l2r" if rng.random() < 0.5 else "r2l")
    return plan


def chunked(plan: list[str]) -> list[str]:
    """A DirDrop plan run in chunk-bi: every R2L becomes R2L within the chunk. A dropped R2L leaves ``l2r`` (as
    in plain DirDrop); a dropped L2R leaves ``chunk-r2l``, R2L within each chunk only, which is what that layer
    would compute when streamed: every layer of a chunk-bi step stays streamable."""
    return [{"bi": CHUNK_BI, "r2l": "chunk-r2l"}.get(d, d) for d in plan]


def draw_chunk_bi(chunk_bi_p: float, chunk_bi_ms: list, frame_shift_ms: float, rng: random.Random) -> int | None:
    """For one training step: a chunk size in encoder frames with probability ``chunk_bi_p``, else None (plain).
    Drawn from ``chunk_bi_ms``, rounded to whole encoder frames (at least one). No draw at all when p is 0, so
    runs configured without chunk-bi keep their random sequence."""
    if chunk_bi_p <= 0 or rng.random() >= chunk_bi_p:
        return None
    ms = rng.choice(list(chunk_bi_ms))
    return max(1, round(ms / (frame_shift_ms * SUBSAMPLING)))


def draw_lookahead(lookahead_ms: list, frame_shift_ms: float, rng: random.Random) -> int:
    """A look-ahead in encoder frames for one chunk-bi training step, drawn from ``lookahead_ms`` (0 when the list
    is empty: no draw, so runs without look-ahead keep their random sequence)."""
    if not lookahead_ms:
        return 0
    return round(rng.choice(list(lookahead_ms)) / (frame_shift_ms * SUBSAMPLING))
