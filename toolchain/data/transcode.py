"""Re-encode a manifest's audio compactly (Opus in Ogg, or lossless FLAC) to move a corpus to a remote trainer.

Why: a GPU box often sits behind a transfer cap (here 64 MiB a call). Six hours of 16 kHz 16-bit wav is ~690 MB;
Opus at ~18 kb/s is ~50 MB. The copy keeps each row's text, duration and extra fields, in the same order, with
paths relative to the new manifest so the folder can be moved as a whole. Every file is written to a temporary
name and renamed, and the manifest last, so an interrupted run never leaves a manifest pointing at half-files.
"""
from __future__ import annotations

import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from edgeasr.runtimes.audio import load_audio
from edgeasr.runtimes.errors import UserError
from edgeasr.data.manifest import Entry, read_manifest, write_manifest

CODECS = ("opus", "flac")
# libsndfile maps Opus "compression level" 0..1 linearly onto a target bit rate of about 256..6 kb/s (measured
# with libsndfile 1.2.2: level 0.9 -> 33 kb/s, 0.96 -> 18 kb/s on TTS speech).
_OPUS_MAX_KBPS, _OPUS_MIN_KBPS = 256.0, 6.0


def opus_level(kbps: float) -> float:
    if not _OPUS_MIN_KBPS <= kbps <= _OPUS_MAX_KBPS:
        raise UserError(f"--kbps must be between {_OPUS_MIN_KBPS:g} and {_OPUS_MAX_KBPS:g}, got {kbps:g}")
    return (_OPUS_MAX_KBPS - kbps) / (_OPUS_MAX_KBPS - _OPUS_MIN_KBPS)


def encode_file(src: str, dst: str, codec: str, kbps: float) -> int:
    """Read ``src`` (any format load_audio reads, resampled to 16 kHz mono), write ``dst`` atomically; bytes."""
    samples, _ = load_audio(src)
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=str(out.parent))
    os.close(fd)
    try:
        if codec == "opus":
            sf.write(tmp, samples, 16000, format="OGG", subtype="OPUS", compression_level=opus_level(kbps))
        else:
            # soundfile reads 16-bit PCM as int/32768: the inverse scale makes a 16-bit source round-trip exactly
            pcm = np.clip(np.round(samples * 32768), -32768, 32767).astype(np.int16)
            sf.write(tmp, pcm, 16000, format="FLAC", subtype="PCM_16")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out.stat().st_size


def transcode_manifest(manifest: Path, out_dir: Path, codec: str = "opus", kbps: float = 18.0, jobs: int = 2,
                       progress=None) -> dict:
    """Write ``out_dir/<manifest name>`` and ``out_dir/audio/NNNNNN.<ext>``; returns size statistics."""
    if codec not in CODECS:
        raise UserError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    if codec == "opus":
        opus_level(kbps)  # validate before any work
    entries = read_manifest(manifest, validate_audio=True)
    if not entries:
        raise UserError(f"{manifest}: no utterances to transcode")
    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(manifest).resolve().parent:
        raise UserError(f"--out must differ from the manifest's folder ({out_dir}): the copy would mix with it")
    ext = "opus" if codec == "opus" else "flac"
    stem = Path(manifest).stem
    targets = [str(out_dir.resolve() / "audio" / stem / f"{i:06d}.{ext}") for i in range(len(entries))]
    sizes = [0] * len(entries)
    args = [(e.audio_filepath, t, codec, kbps) for e, t in zip(entries, targets)]
    if jobs <= 1:
        for i, a in enumerate(args):
            sizes[i] = encode_file(*a)
            if progress:
                progress(1)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            for i, size in enumerate(ex.map(encode_file, *zip(*args), chunksize=16)):
                sizes[i] = size
                if progress:
                    progress(1)
    copied = [Entry(t, e.text, e.duration, e.extra) for e, t in zip(entries, targets)]
    write_manifest(out_dir / Path(manifest).name, copied)
    seconds = sum(e.duration for e in entries)
    source_bytes = sum(Path(e.audio_filepath).stat().st_size for e in entries)
    return {"manifest": str(out_dir / Path(manifest).name), "utterances": len(entries), "hours": seconds / 3600,
            "codec": codec, "bytes": sum(sizes), "source_bytes": source_bytes,
            "kbps": sum(sizes) * 8 / seconds / 1000}
