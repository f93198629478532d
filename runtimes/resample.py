"""Streaming resampling for live input (``transcribe --stdin --rate R``, ``Recognizer`` streams) with libsoxr.

``soxr.ResampleStream`` keeps the filter state between pieces, so a signal fed in any split gives the same output
as fed whole (up to float rounding), with a few milliseconds of delay that ``flush`` releases at the end.
"""
from __future__ import annotations

import numpy as np


class StreamResampler:
    def __init__(self, sr_in: int, sr_out: int):
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self.identity = self.sr_in == self.sr_out
        self._soxr = None
        if not self.identity:
            import soxr

            self._soxr = soxr.ResampleStream(self.sr_in, self.sr_out, 1, dtype="float32", quality="HQ")

    def accept(self, samples: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(samples, np.float32)
        if self.identity:
            return x
        return self._soxr.resample_chunk(x, last=False)

    def flush(self) -> np.ndarray:
        """The tail still inside the filter; the stream is finished after it."""
        if self.identity:
            return np.zeros(0, np.float32)
        return self._soxr.resample_chunk(np.zeros(0, np.float32), last=True)
