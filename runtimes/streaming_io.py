"""Feeding a ``Recognizer`` stream from the two sources a command line has: a decoded file, fed in chunk-sized
pieces as a live source would deliver it, and raw 16-bit PCM from a pipe (``transcribe --stdin``)."""
from __future__ import annotations

import time
from typing import BinaryIO, Callable

import numpy as np

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
