"""Audio in and out (numpy, soundfile, soxr only — no torch, no scipy: this runs on the device).

`load_audio` is the one reader every consumer uses (training, transcribe, parity, bench): it always returns 16 kHz
(or `target_sr`) mono float32 in [-1, 1], and tells the caller, as notices, what it changed. A file it cannot read
is a `UserError` naming the file and the problem, never a traceback from libsndfile.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from edgeasr.runtimes.errors import UserError


def load_audio(path, target_sr: int = 16000) -> tuple[np.ndarray, list[str]]:
    """Read wav/flac (anything libsndfile reads) -> (float32 mono samples in [-1, 1] at ``target_sr``, notices).

    Stereo/multichannel is averaged to mono and resampling uses a polyphase filter; both add a notice.
    Missing, empty, corrupt or truncated files raise `UserError` with one line naming the file."""
    p = Path(path)
    info = check_audio_file(p)
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:
        raise UserError(f"cannot decode audio file {p}: {_one_line(e)}") from None
    _check_finite(p, data)
    if data.shape[0] == 0:
        raise UserError(f"audio file has no samples: {p}")
    if data.shape[0] < info.frames:
        raise UserError(f"audio file is truncated: {p} (read {data.shape[0]} of {info.frames} frames)")
    notices = audio_notices(p, info, target_sr)
    samples = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sr != target_sr:
        samples = resample(samples, sr, target_sr)
    samples = np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)
    return np.ascontiguousarray(samples), notices


def check_audio_file(path):
    """``soundfile.info`` of an audio file after the checks that need no decoding (missing, a directory, empty,
    unreadable header, no frames, a wav shorter than its header says); else a one-line `UserError`."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"audio file not found: {p}")
    if p.is_dir():
        raise UserError(f"audio path is a directory, not a file: {p}")
    if p.stat().st_size == 0:
        raise UserError(f"audio file is empty (0 bytes): {p}")
    try:
        info = sf.info(str(p))
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError with a multi-line message
        raise UserError(f"cannot read audio file {p}: {_one_line(e)}") from None
    if info.frames <= 0:
        raise UserError(f"audio file has no samples: {p}")
    short = _wav_data_shortfall(p) if info.format == "WAV" else 0
    if short > 0:
        raise UserError(f"audio file is truncated: {p} (data chunk is {short} bytes shorter than its header says)")
    return info


def audio_notices(path, info, target_sr: int) -> list[str]:
    """What reading ``path`` changes (downmix, resampling), as the notices the CLI prints."""
    name, notices = Path(path).name, []
    if info.channels > 1:
        notices.append(f"{name}: {info.channels} channels downmixed to mono")
    if info.samplerate != target_sr:
        notices.append(f"{name}: resampled {info.samplerate} Hz -> {target_sr} Hz")
    return notices


def read_blocks(path, block_seconds: float = 10.0) -> Iterator[tuple[int, np.ndarray]]:
    """``(sample rate, float32 mono block)`` pairs of an audio file at its own rate, ``block_seconds`` at a time:
    a file of any length in the memory of one block (callers resample as a stream, e.g. ``Recognizer`` streams).
    The same one-line `UserError`s as `load_audio`; NaN or a short read are found at the block that has them."""
    p = Path(path)
    info = check_audio_file(p)
    n = max(1, int(block_seconds * info.samplerate))
    read = 0
    try:
        with sf.SoundFile(str(p)) as f:
            while True:
                data = f.read(n, dtype="float32", always_2d=True)
                if not len(data):
                    break
                _check_finite(p, data)
                read += len(data)
                mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
                yield info.samplerate, np.ascontiguousarray(np.clip(mono, -1.0, 1.0), np.float32)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot decode audio file {p}: {_one_line(e)}") from None
    if read < info.frames:
        raise UserError(f"audio file is truncated: {p} (read {read} of {info.frames} frames)")


def _check_finite(p: Path, data: np.ndarray) -> None:
    if not np.all(np.isfinite(data)):
        raise UserError(f"audio file contains NaN/Inf samples: {p}")


def resample(samples: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling of a whole signal (libsoxr, high quality)."""
    if sr_in == sr_out:
        return np.asarray(samples, np.float32)
    import soxr

    return soxr.resample(np.asarray(samples, np.float32), int(sr_in), int(sr_out), quality="HQ").astype(np.float32)


def write_wav(path, samples: np.ndarray, sr: int) -> None:
    """Write 16-bit PCM wav atomically: a temp file in the same directory, then os.replace.

    Samples are float in [-1, 1] (clipped) or int16. A crash never leaves a half-written wav under ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    x = np.asarray(samples)
    if x.dtype != np.int16:
        x = np.clip(np.asarray(x, np.float64), -1.0, 1.0)
        x = np.round(x * 32767.0).astype(np.int16)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.{os.getpid()}.", suffix=".tmp", dir=str(p.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            sf.write(f, x, int(sr), subtype="PCM_16", format="WAV")
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _wav_data_shortfall(p: Path) -> int:
    """How many bytes the RIFF 'data' chunk is missing (0 if complete or the size is a streaming placeholder).

    libsndfile silently shortens a truncated wav to the bytes present, so this checks the header itself."""
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                return 0
            order = "little" if head[:4] == b"RIFF" else "big"
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                hdr = f.read(8)
                cid, clen = hdr[:4], int.from_bytes(hdr[4:8], order)
                if cid == b"data":
                    if clen in (0, 0xFFFFFFFF):  # written by a stream that could not seek back
                        return 0
                    return max(0, pos + 8 + clen - size)
                pos += 8 + clen + (clen & 1)
    except OSError:
        return 0
    return 0


def _one_line(e: Exception) -> str:
    msg = " ".join(str(e).split())
    return msg or type(e).__name__
