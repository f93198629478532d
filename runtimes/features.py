"""80-bin log-mel fbank with kaldi-native-fbank: the one feature frontend for training and deployment.

The options travel with the model (checkpoint config and ONNX metadata) so a client computes exactly the
features the encoder was trained on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import kaldi_native_fbank as knf
import numpy as np


@dataclass(frozen=True)
class FbankOptions:
    sample_rate: int = 16000
    num_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0  # deterministic features: training adds its own augmentation
    preemph_coeff: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"
    snip_edges: bool = False
    low_freq: float = 20.0
    high_freq: float = -400.0
    energy_floor: float = 1e-10  # 0 in kaldi lets log(0) through on digital silence

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FbankOptions":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def knf_options(self) -> knf.FbankOptions:
        o = knf.FbankOptions()
        o.frame_opts.samp_freq = float(self.sample_rate)
        o.frame_opts.frame_length_ms = self.frame_length_ms
        o.frame_opts.frame_shift_ms = self.frame_shift_ms
        o.frame_opts.dither = self.dither
        o.frame_opts.preemph_coeff = self.preemph_coeff
        o.frame_opts.remove_dc_offset = self.remove_dc_offset
        o.frame_opts.window_type = self.window_type
        o.frame_opts.snip_edges = self.snip_edges
        o.mel_opts.num_bins = self.num_bins
        o.mel_opts.low_freq = self.low_freq
        o.mel_opts.high_freq = self.high_freq
        o.energy_floor = self.energy_floor
        return o


BLOCK_SAMPLES = 16000


class StreamingFbank:
    """Feed samples as they arrive, pop the frames that are ready (OnlineFbank keeps the overlap)."""

    def __init__(self, opts: FbankOptions = FbankOptions()):
        self.opts = opts
        # keep the options object alive: OnlineFbank holds a reference to it, not a copy
        self._knf_opts = opts.knf_options()
        self._fbank = knf.OnlineFbank(self._knf_opts)
        self._popped = 0

    def accept(self, samples: np.ndarray) -> None:
        # kaldi-native-fbank expects float samples in [-1, 1] scaled like kaldi's int16 input; it takes a Python
        # list (~40 bytes a sample), so a long signal goes in one-second pieces to keep that copy small
        x = np.asarray(samples, np.float32)
        for i in range(0, len(x), BLOCK_SAMPLES):
            self._fbank.accept_waveform(self.opts.sample_rate, (x[i:i + BLOCK_SAMPLES] * 32768.0).tolist())

    def finish(self) -> None:
        self._fbank.input_finished()

    def pop(self) -> np.ndarray:
        ready = self._fbank.num_frames_ready
        # get_frame returns a view into a buffer that pop() frees: copy first
        frames = [np.array(self._fbank.get_frame(i), dtype=np.float32) for i in range(self._popped, ready)]
        if ready > self._popped:
            self._fbank.pop(ready - self._popped)  # frees consumed frames: constant memory on long streams
        self._popped = ready
        if not frames:
            return np.zeros((0, self.opts.num_bins), np.float32)
        return np.asarray(frames, dtype=np.float32)


def compute_fbank(samples: np.ndarray, opts: FbankOptions = FbankOptions()) -> np.ndarray:
    """Whole-utterance features ``[T, num_bins]`` float32 from float samples in [-1, 1] at opts.sample_rate."""
    fb = StreamingFbank(opts)
    fb.accept(samples)
    fb.finish()
    return fb.pop()
