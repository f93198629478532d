"""Calibration data from real streaming (DESIGN.md §4): what the int8 ranges are measured on.

Step graphs: the fp32 step model runs over each calibration utterance chunk by chunk (``chunk_frames`` from the
metadata, the tail padded to ``chunk_multiple`` exactly as ``runtimes.session`` does, or to a whole chunk with
``same_shape`` for histogram calibration) on ONNX Runtime, and every
calibration sample is ``(chunk, the states actually carried into it)``. Zeros or random states would calibrate
the ranges of tensors that mix in the state (WKV/SSM readouts, K/V caches, conv caches) wrongly.
Full graphs: whole utterances (``x``, ``x_lens``). Chunk graphs: each chunk alone.

Memory is bounded: samples are produced lazily, one utterance's features at a time, and capped by
``max_utterances`` / ``max_samples``; ``rewind()`` replays the same samples (the fp32 model is run again).
Audio is read with ``runtimes.audio.load_audio`` and features with the fbank options in the model's metadata.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edgeasr.runtimes.audio import load_audio
from edgeasr.runtimes.errors import UserError
from edgeasr.runtimes.features import compute_fbank
from edgeasr.runtimes.metadata import read_metadata, state_io_names
from edgeasr.runtimes.session import fbank_options

MIN_UTTERANCES = 2
MIN_SAMPLES = 4
STRIDE = 16  # MinMax stride: samples per pass are cut to a multiple of it


class CalibrationError(UserError):
    """Calibration data that cannot be used; one line for the user."""


def utterance_features(path, meta: dict) -> np.ndarray:
    """``[T, F]`` fbank frames of one audio file, as the model's metadata specifies them."""
    opts = fbank_options(meta)
    try:
        samples, _ = load_audio(path, opts.sample_rate)
    except UserError as e:
        raise CalibrationError(f"calibration audio unreadable: {e}") from None
    return compute_fbank(samples, opts)


class StreamingCalibrationReader(CalibrationDataReader):
    """ONNX Runtime ``CalibrationDataReader`` over audio files for the graph kind of ``model_path``."""

    def __init__(self, model_path, audio_paths: list, max_utterances: int | None = None,
                 max_samples: int | None = None, threads: int = 1,
                 progress: Callable[[int, int], None] | None = None, same_shape: bool = False):
        self.model_path = Path(model_path)
        self.meta = read_metadata(self.model_path)
        self.kind = self.meta["graph_kind"]
        self.paths = list(audio_paths)[:max_utterances] if max_utterances else list(audio_paths)
        if len(self.paths) < MIN_UTTERANCES:
            raise CalibrationError(f"calibration set too small: {len(self.paths)} utterance(s), need at least "
                                   f"{MIN_UTTERANCES}")
        self.max_samples = max_samples
        self.threads = threads
        self.progress = progress
        self.multiple = int(self.meta.get("chunk_multiple", self.meta.get("subsampling", 4)))
        self.chunk_frames = int(self.meta.get("chunk_frames") or 8 * self.multiple)
        self.same_shape = same_shape  # see calibration.quantize.HISTOGRAM_METHODS
        self._sess = None
        self.stats = {"utterances": 0, "samples": 0, "frames": 0, "samples_with_nonzero_state": 0}
        self._it: Iterator[dict] | None = None
        self._served, self._stop = 0, None
        self.planned = 0

    # --- CalibrationDataReader ------------------------------------------------------------------------------
    def get_next(self) -> dict | None:
        if self._it is None:
            self._it, self._served = self.samples(), 0
        if self._stop is not None and self._served >= self._stop:
            return None  # end of the current stride
        feeds = next(self._it, None)
        if feeds is not None:
            self._served += 1
        return feeds

    def set_range(self, start_index: int, end_index: int) -> None:
        """ORT's strided MinMax asks for samples [start, end) in order; the stream just continues."""
        self._stop = end_index

    def rewind(self) -> None:
        self._it, self._served, self._stop = None, 0, None

    def __len__(self) -> int:
        """Samples per pass, a multiple of the MinMax stride (set by ``check_calibration``)."""
        return self.planned

    # --- samples -------------------------------------------------------------------------------------------
    def _session(self):
        if self._sess is None:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            self._sess = ort.InferenceSession(str(self.model_path), so, providers=["CPUExecutionProvider"])
        return self._sess

    def _chunks(self, f: np.ndarray) -> Iterator[np.ndarray]:
        n = self.chunk_frames
        for s in range(0, len(f), n):
            c = f[s:s + n]
            pad = -len(c) % (n if self.same_shape else self.multiple)
            if pad:
                c = np.concatenate([c, np.zeros((pad, f.shape[1]), np.float32)])
            yield np.ascontiguousarray(c[None], np.float32)

    def samples(self) -> Iterator[dict]:
        """Lazily: one dict of graph inputs per calibration sample (fresh counts on every pass)."""
        self.stats = {"utterances": 0, "samples": 0, "frames": 0, "samples_with_nonzero_state": 0}
        names = state_io_names(self.meta)
        for path in self.paths:
            f = utterance_features(path, self.meta)
            if len(f) == 0:
                continue
            self.stats["utterances"] += 1
            self.stats["frames"] += len(f)
            if self.kind == "full":
                batches = [{"x": f[None].astype(np.float32), "x_lens": np.array([len(f)], np.int64)}]
            elif self.kind == "chunk":
                batches = [{"x": c} for c in self._chunks(f)]
            else:
                batches = self._stream(f, names)
            for feeds in batches:
                if self.max_samples and self.stats["samples"] >= self.max_samples:
                    return
                self.stats["samples"] += 1
                if any(np.any(v != 0) for k, v in feeds.items() if k not in ("x", "x_lens")):
                    self.stats["samples_with_nonzero_state"] += 1
                if self.progress:  # in samples: a max_samples cap ends the pass mid-way through the utterances
                    self.progress(self.stats["samples"], self.planned)
                yield feeds

    def _stream(self, f: np.ndarray, names) -> Iterator[dict]:
        sess = self._session()
        states = {iname: np.full((1, *s["shape"]), s.get("init", 0.0), np.float32)
                  for s, (iname, _) in zip(self.meta["states"], names)}
        outs = [o for _, o in names]
        for c in self._chunks(f):
            feeds = {"x": c, **states}
            yield feeds  # the chunk with the state actually carried into it
            res = sess.run(outs, {"x": c, **states})
            states = {iname: r for (iname, _), r in zip(names, res)}


def check_calibration(reader: StreamingCalibrationReader, progress: Callable[[int, int], None] | None = None) -> dict:
    """Validate the set up front without running the model: every file readable, enough samples.
    Returns the sample count the reader will produce. ``progress(done, total)`` per file read."""
    samples = utts = 0
    for i, path in enumerate(reader.paths):
        f = utterance_features(path, reader.meta)
        if progress:
            progress(i + 1, len(reader.paths))
        if len(f) == 0:
            continue
        utts += 1
        samples += 1 if reader.kind == "full" else -(-len(f) // reader.chunk_frames)
    if reader.max_samples:
        samples = min(samples, reader.max_samples)
    if samples < MIN_SAMPLES or utts < MIN_UTTERANCES:
        raise CalibrationError(f"calibration set too small: {samples} sample(s) from {utts} usable utterance(s), "
                               f"need at least {MIN_SAMPLES} samples from {MIN_UTTERANCES} utterances")
    if samples > STRIDE:  # whole strides only (ORT's strided MinMax); at most STRIDE-1 samples left out
        samples -= samples % STRIDE
    reader.planned = reader.max_samples = samples
    return {"utterances": utts, "samples": samples}
