"""Streaming polyphase resampling for live input (``transcribe --stdin --rate R``), numpy/scipy only.

Overlap-save around ``scipy.signal.resample_poly``: input is cut into blocks whose length is a multiple of
``down`` (so each block maps to exactly ``len * up / down`` output samples) and each block is resampled with
``context`` input samples of real signal on both sides (zeros before the first sample and after the last, as
``resample_poly`` pads a whole signal), keeping only the block's own outputs. With ``context`` longer than the
filter's half length the result equals ``resample_poly`` over the whole signal; it costs ``context`` samples of
delay (a few ms).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.signal import resample_poly


class StreamResampler:
    def __init__(self, sr_in: int, sr_out: int):
        g = math.gcd(int(sr_in), int(sr_out))
        self.up, self.down = int(sr_out) // g, int(sr_in) // g
        half = 10 * max(self.up, self.down)  # resample_poly's default filter half length (upsampled domain)
        need = -(-half // self.up) + 2  # in input samples
        self.context = -(-need // self.down) * self.down
        self._buf = np.zeros(self.context, np.float64)  # left context: zeros, as resample_poly pads
        self._start = self.context  # index in _buf of the first input sample not yet output
        self.identity = self.up == self.down == 1

    def accept(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, np.float32)
        if self.identity:
            return x
        self._buf = np.concatenate([self._buf, x.astype(np.float64)])
        avail = len(self._buf) - self._start - self.context  # inputs that have their right context
        n = (avail // self.down) * self.down
        if n <= 0:
            return np.zeros(0, np.float32)
        return self._emit(n)

    def _emit(self, n: int) -> np.ndarray:
        c = self.context
        seg = self._buf[self._start - c:self._start + n + c]
        y = resample_poly(seg, self.up, self.down)
        o = c * self.up // self.down
        out = y[o:o + n * self.up // self.down]
        self._start += n
        keep = self._start - c
        self._buf, self._start = self._buf[keep:], c
        return out.astype(np.float32)

    def flush(self) -> np.ndarray:
        """The tail (right context: zeros). Output length totals ceil(len(input) * up / down), like resample_poly."""
        if self.identity:
            return np.zeros(0, np.float32)
        rest = len(self._buf) - self._start
        if rest <= 0:
            return np.zeros(0, np.float32)
        total_out = -(-rest * self.up // self.down)
        pad = -rest % self.down
        self._buf = np.concatenate([self._buf, np.zeros(pad + self.context)])
        out = self._emit(rest + pad)
        return out[:total_out]
