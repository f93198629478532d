"""Feeding a ``Recognizer`` stream from the sources a command line has: an audio file read block by block
(``stream_file``: offline, or in chunk-sized pieces as a live source would deliver it), decoded samples
(``stream_samples``), and raw 16-bit PCM from a pipe (``transcribe --stdin``). Files and pipes are never held
whole: memory does not grow with their length (a step graph's stream holds a chunk of features and its states)."""
from __future__ import annotations

import time
from typing import BinaryIO, Callable

import numpy as np

from edgeasr.runtimes.errors import UserError
from edgeasr.runtimes.recognizer import Recognizer, Result

OnPartial = Callable[[str, float], None]  # (partial text, seconds of audio so far)


def stream_samples(rec: Recognizer, samples: np.ndarray, sample_rate: int,
                   on_partial: OnPartial | None = None) -> tuple[Result, list[float], int]:
    """Stream ``samples`` through a new stream one chunk at a time: (final result, seconds each piece took,
    number of partials)."""
    s = rec.create_stream()
    step = max(1, int(round(rec.chunk_ms * sample_rate / 1000)))
    latencies, partials = [], 0
    try:
        for i in range(0, len(samples), step):
            t = time.perf_counter()
            partial = s.accept_waveform(sample_rate, samples[i:i + step])
            latencies.append(time.perf_counter() - t)
            if partial is not None:
                partials += 1
                if on_partial:
                    on_partial(partial, min(i + step, len(samples)) / sample_rate)
        return s.finish(), latencies, partials
    finally:
        s.close()


def stream_file(rec: Recognizer, path, chunked: bool = False, on_partial: OnPartial | None = None,
                block_seconds: float = 10.0) -> tuple[Result, list[float], int, float]:
    """Transcribe an audio file read ``block_seconds`` at a time (``runtimes.audio.read_blocks``) and resampled as a
    stream: (final result, seconds each piece took, partials, seconds of audio). ``chunked``: feed chunk-sized
    pieces and time each (``--stream``); else whole blocks (offline). On a step graph both give the same result,
    in memory bounded by a block. A full or chunk graph's stream keeps the features (~32 KB per second of audio)
    and decodes them in one call at the end, whose memory grows with the file (~36 MB a minute for the shipped
    default's full graph, see ``runtimes.recognizer``): long files want a step graph."""
    from edgeasr.runtimes.audio import read_blocks

    s = rec.create_stream()
    latencies, partials, seconds = [], 0, 0.0
    try:
        for rate, block in read_blocks(path, block_seconds):
            step = max(1, int(round(rec.chunk_ms * rate / 1000))) if chunked else len(block)
            for i in range(0, len(block), step):
                t = time.perf_counter()
                try:
                    partial = s.accept_waveform(rate, block[i:i + step])
                except ValueError as e:  # e.g. a rate no resampler takes: the file's fault, in one line
                    raise UserError(f"{path}: {e}") from None
                latencies.append(time.perf_counter() - t)
                seconds += len(block[i:i + step]) / rate
                if partial is not None:
                    partials += 1
                    if on_partial:
                        on_partial(partial, seconds)
        return s.finish(), latencies, partials, seconds
    finally:
        s.close()


def stream_pcm(rec: Recognizer, source: BinaryIO, rate: int, on_partial: OnPartial | None = None,
               on_notice: Callable[[str], None] | None = None) -> Result:
    """Live: raw s16le mono PCM at ``rate`` read from ``source`` until EOF, one chunk at a time; partials as they
    change, the final result at the end. Reads any byte split (an odd byte waits for its partner)."""
    s = rec.create_stream()
    nbytes = max(2, int(round(rec.chunk_ms * rate / 1000)) * 2)
    carry, total = b"", 0
    try:
        while True:
            data = source.read(nbytes)
            if not data:
                break
            data = carry + data
            usable = len(data) - len(data) % 2
            carry = data[usable:]
            pcm = np.frombuffer(data[:usable], dtype="<i2")
            total += len(pcm)
            partial = s.accept_waveform(rate, pcm)
            if partial is not None and on_partial:
                on_partial(partial, total / rate)
        if carry and on_notice:
            on_notice("stdin: odd trailing byte ignored (16-bit PCM expected)")
        before = s.text
        result = s.finish()
        if result.text != before and on_partial:
            on_partial(result.text, total / rate)
        return result
    finally:
        s.close()
