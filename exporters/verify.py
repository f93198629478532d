"""Verification built into export: ONNX Runtime (CPUExecutionProvider) on the new graph against torch.

This is the one exporter module that imports onnxruntime (the export must prove the file it writes). Each check
yields rows ``(tensor, max abs error)``:

- ``full``: random batch with unequal lengths, and real features: ``logprobs`` (every frame), ``out_lens``.
- ``chunk``: random chunks, and real features cut into recommended-size chunks, each chunk alone.
- ``step``: streamed chunk by chunk carrying states (several chunk sizes; ``chunk-bi`` graphs only at their
  ``chunk_frames``, the one chunking they compute, in the calls of ``step_windows`` with their look-ahead):
  ``logprobs`` / ``encoder_out`` against the torch full forward in the encoder's mode, and the final
  ``out.<state>`` against the torch step states (error relative to the state's magnitude when it exceeds 1:
  WKV/SSM states of trained models reach hundreds).
"""
from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgeasr.models.config import CHUNK_BI
from edgeasr.models.conformer import Encoder
from edgeasr.runtimes.metadata import STATE_INPUT_PREFIX, STATE_OUTPUT_PREFIX

REAL_WAV_GLOB = "/usr/share/pocketsphinx/test/data/librivox/*.wav"
MAX_REAL_FRAMES = 1200  # 12 s of real speech is plenty to prove parity


@dataclass
class VerifyReport:
    rows: list[tuple[str, float]] = field(default_factory=list)

    def add(self, name: str, got: np.ndarray, ref: np.ndarray, scaled: bool = False) -> None:
        """Max abs error; ``scaled`` divides it by max(1, max |ref|) (for states: a recurrent state of magnitude
        M carries fp32 rounding of about M * 6e-8 whatever the backend, so large states are judged relatively)."""
        if got.shape != ref.shape:
            self.rows.append((f"{name} (shape {got.shape} != {ref.shape})", float("inf")))
            return
        if not got.size:
            self.rows.append((name, 0.0))
            return
        ref64 = ref.astype(np.float64)
        err = float(np.abs(got.astype(np.float64) - ref64).max())
        if scaled:
            scale = max(1.0, float(np.abs(ref64).max()))
            err, name = err / scale, f"{name} (/{scale:.3g})" if scale > 1.0 else name
        self.rows.append((name, err))

    @property
    def max_error(self) -> float:
        return max((e for _, e in self.rows), default=0.0)

    def worst(self, n: int = 5) -> list[tuple[str, float]]:
        return sorted(self.rows, key=lambda r: -r[1])[:n]

    def failures(self, tolerance: float) -> list[tuple[str, float]]:
        return [r for r in self.worst(len(self.rows)) if not r[1] <= tolerance]


def session(model_bytes: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def real_features(wav: str | Path | None, fbank: dict) -> tuple[str, np.ndarray] | None:
    """(label, [T, F] float32) from ``wav`` or the first pocketsphinx LibriVox clip; None when neither exists."""
    from edgeasr.runtimes.audio import load_audio
    from edgeasr.runtimes.features import FbankOptions, compute_fbank

    if wav is None:
        found = sorted(glob.glob(REAL_WAV_GLOB))
        if not found:
            return None
        wav = found[0]
    opts = FbankOptions.from_dict(fbank)
    samples, _ = load_audio(wav, opts.sample_rate)
    feats = compute_fbank(samples, opts)[:MAX_REAL_FRAMES]
    return Path(wav).name, np.ascontiguousarray(feats, dtype=np.float32)


def _random_feats(encoder: Encoder, B: int, T: int, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, encoder.cfg.n_mels, generator=g) * 2.0 * encoder.feat_std + encoder.feat_mean
    return x.numpy().astype(np.float32)


def _pad4(x: np.ndarray) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, -x.shape[1] % 4), (0, 0)))


def step_windows(T: int, chunk: int, lookahead: int = 0):
    """The calls a runtime makes over ``T`` fbank frames: ``(start, end, emitted encoder frames or None for all)``.
    Without a look-ahead, consecutive chunks; with one, calls of ``chunk + lookahead`` frames that emit (and hand
    on the states of) their first ``chunk``, then one call over the rest that emits everything."""
    if not lookahead:
        yield from ((s, min(s + chunk, T), None) for s in range(0, T, chunk))
        return
    pos = 0
    while T - pos >= chunk + lookahead:
        yield pos, pos + chunk + lookahead, chunk // 4
        pos += chunk
    if pos < T:
        yield pos, T, None


def stream_onnx(sess, x: np.ndarray, chunk: int, specs,
                lookahead: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Run a step graph over ``x [B,T,F]`` in the calls of ``step_windows`` (each zero-padded to 4 frames).
    Returns (logprobs, encoder_out, final states by name)."""
    B = x.shape[0]
    state = {s.name: np.full((B, *s.shape), s.init, dtype=np.float32) for s in specs}
    outs = ["logprobs", "encoder_out"] + [STATE_OUTPUT_PREFIX + s.name for s in specs]
    lps, encs = [], []
    for start, end, emit in step_windows(x.shape[1], chunk, lookahead):
        feeds = {"x": _pad4(x[:, start:end])}
        feeds.update({STATE_INPUT_PREFIX + k: v for k, v in state.items()})
        lp, enc, *new = sess.run(outs, feeds)
        lps.append(lp[:, :emit])
        encs.append(enc[:, :emit])
        state = {spec.name: v for spec, v in zip(specs, new)}
    return np.concatenate(lps, 1), np.concatenate(encs, 1), state


def _stream_torch(encoder: Encoder, x: np.ndarray, chunk: int) -> dict[str, np.ndarray]:
    state = encoder.initial_state(x.shape[0])
    for start, end, _ in step_windows(x.shape[1], chunk, encoder.lookahead_frames):
        _, _, state = encoder.step(torch.from_numpy(_pad4(x[:, start:end])), state)
    return {k: v.numpy() for k, v in state.items()}


@torch.no_grad()
def verify(model_bytes: bytes, encoder: Encoder, kind: str, chunk_frames: int, fbank: dict,
           wav: str | Path | None = None) -> VerifyReport:
    sess = session(model_bytes)
    rep = VerifyReport()
    real = real_features(wav, fbank)
    inputs = [("random", _random_feats(encoder, 2, 4 * 23 + 1, 0))]
    if real is not None:
        inputs.append((f"real[{real[0]}]", real[1][None]))

    if kind == "full":
        for label, x in inputs:
            lens = np.array([x.shape[1], max(1, x.shape[1] * 2 // 3)][:x.shape[0]], dtype=np.int64)
            lp, ol = sess.run(["logprobs", "out_lens"], {"x": x, "x_lens": lens})
            rlp, rol, _ = encoder(torch.from_numpy(x), torch.from_numpy(lens))
            rep.add(f"{label}/logprobs", lp, rlp.numpy())
            rep.add(f"{label}/out_lens", ol, rol.numpy())
    elif kind == "chunk":
        for label, x in inputs:
            for s in range(0, x.shape[1], chunk_frames):
                xc = np.ascontiguousarray(x[:, s:s + chunk_frames])
                (lp,) = sess.run(["logprobs"], {"x": xc})
                rlp = encoder(torch.from_numpy(xc), torch.full((x.shape[0],), xc.shape[1], dtype=torch.int64))[0]
                rep.add(f"{label}/chunk@{s}/logprobs", lp, rlp.numpy())
    else:
        specs = encoder.state_specs()
        for label, x in inputs:
            T = x.shape[1]
            rlp, _, renc = encoder(torch.from_numpy(x), torch.full((x.shape[0],), T, dtype=torch.int64))
            several = label == "random" and encoder.direction != CHUNK_BI
            sizes = sorted({chunk_frames, 4, 12}) if several else [chunk_frames]
            for c in sizes:
                lp, enc, state = stream_onnx(sess, x, c, specs, encoder.lookahead_frames)
                n = rlp.shape[1]
                rep.add(f"{label}/step@{c}/logprobs", lp[:, :n], rlp.numpy())
                rep.add(f"{label}/step@{c}/encoder_out", enc[:, :n], renc.numpy())
                ref_state = _stream_torch(encoder, x, c)
                for name, v in state.items():
                    rep.add(f"{label}/step@{c}/{STATE_OUTPUT_PREFIX}{name}", v, ref_state[name], scaled=True)
    return rep
