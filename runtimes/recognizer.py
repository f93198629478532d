"""``Recognizer``: the API an application embeds, shaped like sherpa-onnx's online recognizer.

    rec = Recognizer("model.step.onnx", backend="ort", threads=1, lm=None)
    s = rec.create_stream()
    for piece in microphone():                      # any rate, float32 in [-1, 1] or int16
        partial = s.accept_waveform(48000, piece)   # the new partial text, or None when it did not change
        if s.is_endpoint(): ...                     # trailing-silence rules (sherpa-onnx's defaults)
    result = s.finish()                             # Result(text, tokens, timestamps)

A step graph streams: the audio is resampled to the model's rate in a streaming resampler, turned into fbank frames
and run chunk by chunk with the recurrent state carried (``runtimes.session``): memory stays flat however long the
stream. Full and strict-chunk graphs cannot stream: their streams buffer features (80 floats per 10 ms, ~32 KB per
second of audio, not the samples) and decode them in one call at ``finish()``, whose working memory grows with the
utterance (every layer's activations of the whole utterance; attention is quadratic in it) — the limit is that
call, not the reading. Measured on the shipped default's full graph (ORT, 1 thread): 414 MB peak for 5 minutes,
595 MB for 10, so ~36 MB a minute and about 35 minutes in 1.5 GB; its step graph ran 2 hours in 126 MB (ORT) and
321 MB (OpenVINO). Transcribe hours of audio with a step graph. ``rec.decode_streams(streams)`` runs the chunks
that several streams have buffered (fed with ``accept_waveform(..., decode=False)``) as one batch.

Everything here is numpy + the backend's runtime: no torch, scipy or onnx.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeasr.runtimes.errors import UserError
from edgeasr.runtimes.features import StreamingFbank
from edgeasr.runtimes.resample import StreamResampler
from edgeasr.runtimes.session import CtcStreamDecoder, OfflineSession, StreamingSession, fbank_options

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768000  # outside: a unit mistake (Hz vs kHz), not audio


@dataclass(frozen=True)
class Result:
    """A transcript with its CTC alignment: ``tokens`` as emitted by the acoustic model (characters and word
    separators) and ``timestamps``, each token's start in seconds from the start of the utterance. With a word LM,
    ``text`` is the LM's words and the tokens stay the greedy path's."""
    text: str
    tokens: list[str] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EndpointRules:
    """When a stream has reached the end of an utterance (sherpa-onnx's three rules and defaults), in seconds:
    rule 1, this much trailing silence and nothing decoded yet; rule 2, this much trailing silence after speech;
    rule 3, the utterance is this long. Silence is the run of CTC frames at the end whose best token is blank or
    the word separator."""
    rule1_min_trailing_silence: float = 2.4
    rule2_min_trailing_silence: float = 1.2
    rule3_min_utterance_length: float = 20.0


class _Decoders:
    """The greedy CTC path (tokens, timestamps, trailing silence) plus, when given, a word-LM decoder for the text."""

    def __init__(self, vocab, blank_id: int, lm_factory=None):
        self.greedy = CtcStreamDecoder(vocab, blank_id)
        self.lm = lm_factory(vocab, blank_id) if lm_factory else None

    def accept(self, logprobs: np.ndarray) -> bool:
        changed = self.greedy.accept(logprobs)
        return self.lm.accept(logprobs) if self.lm else changed

    def finish(self) -> None:
        if self.lm:
            self.lm.finish()

    @property
    def frames(self) -> int:
        return self.greedy.frames

    @property
    def text(self) -> str:
        return self.lm.text if self.lm else self.greedy.text


def _check_samples(sample_rate, samples) -> np.ndarray:
    """float32 mono samples in [-1, 1] from what the caller handed us, or a one-line ValueError naming the problem."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.integer, np.floating)):
        raise ValueError(f"sample_rate must be a number in Hz, got {type(sample_rate).__name__}")
    if not math.isfinite(sample_rate) or sample_rate != int(sample_rate):
        raise ValueError(f"sample_rate must be a whole number of Hz, got {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate {int(sample_rate)} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"samples must be a 1-D mono array, got shape {list(x.shape)}")
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"samples must be float32/float64 in [-1, 1] or int16, got {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError("samples contain NaN or Inf")
    return np.clip(x, -1.0, 1.0).astype(np.float32, copy=False)


class RecognizerStream:
    """One audio stream of a ``Recognizer``: one utterance at a time (``reset()`` starts the next)."""

    def __init__(self, rec: "Recognizer"):
        self.rec = rec
        self._inner = rec._session.new_stream() if rec.streaming else None
        self._new_utterance()

    def _new_utterance(self) -> None:
        self._rate: int | None = None
        self._resampler: StreamResampler | None = None
        self._samples_in = 0  # at the model's rate
        self._result: Result | None = None
        if not self.rec.streaming:
            self._fbank = StreamingFbank(self.rec.fbank_opts)
            self._feats: list[np.ndarray] = []

    # --- feeding -----------------------------------------------------------------------------------------------
    def accept_waveform(self, sample_rate: int, samples, decode: bool = True) -> str | None:
        """Feed audio at ``sample_rate`` (any rate, resampled to the model's); returns the new partial text when it
        changed, else None. ``decode=False`` only buffers (``Recognizer.decode_streams`` batches streams)."""
        x = _check_samples(sample_rate, samples)
        if self._result is not None:
            raise ValueError("stream already finished: call reset() to start a new utterance")
        rate = int(sample_rate)
        if self._rate is not None and rate != self._rate:
            raise ValueError(f"sample_rate changed within an utterance ({self._rate} -> {rate} Hz); reset() first")
        if self._resampler is None:
            self._rate, self._resampler = rate, StreamResampler(rate, self.rec.sample_rate)
        self._feed(self._resampler.accept(x))
        if decode and self.rec.streaming:
            return self.rec.decode_streams([self])[0]
        return None

    def _feed(self, y: np.ndarray) -> None:
        self._samples_in += len(y)
        if self.rec.streaming:
            self._inner.feed(y)
        else:  # features only: a long file costs 80 floats per 10 ms, not its samples
            self._fbank.accept(y)
            self._feats.append(self._fbank.pop())

    def finish(self) -> Result:
        """End of the utterance: flush the resampler and the model, return the final ``Result``."""
        if self._result is None:
            if self._resampler is not None:
                self._feed(self._resampler.flush())
            if self.rec.streaming:
                self._inner.flush()
                dec = self._inner.decoder
            else:
                self._fbank.finish()
                self._feats.append(self._fbank.pop())
                feats = np.concatenate(self._feats) if self._feats else np.zeros((0, self.rec.num_bins), np.float32)
                dec = self.rec._decode_offline(feats)
            self._result = self.rec._result(dec)
        return self._result

    # --- reading -----------------------------------------------------------------------------------------------
    @property
    def result(self) -> Result:
        """The final result after ``finish()``, else the partial one so far."""
        if self._result is not None:
            return self._result
        if self.rec.streaming:
            return self.rec._result(self._inner.decoder)
        return Result("")

    @property
    def text(self) -> str:
        return self.result.text

    @property
    def duration(self) -> float:
        """Seconds of audio fed to the model so far in this utterance."""
        return self._samples_in / self.rec.sample_rate

    def is_endpoint(self) -> bool:
        """True when the endpoint rules say the utterance has ended (streaming graphs only; else False)."""
        if not self.rec.streaming:
            return False
        rules, dec = self.rec.endpoint, self._inner.decoder.greedy
        silence = dec.trailing_silence * self.rec.frame_seconds
        if dec.text:  # some speech decoded (a leading word separator is not speech)
            if silence >= rules.rule2_min_trailing_silence:
                return True
        elif silence >= rules.rule1_min_trailing_silence:
            return True
        return dec.frames * self.rec.frame_seconds >= rules.rule3_min_utterance_length

    def reset(self) -> None:
        """Start a new utterance on this stream (initial states, fresh resampler, features and transcript)."""
        if self.rec.streaming:
            self._inner.reset()
        self._new_utterance()

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


class Recognizer:
    """Speech recognizer over one exported model on one backend (``ort``, ``openvino``, ``tensorrt``,
    ``ort-cuda``). ``lm``: a word-LM directory (``edgeasr lm build``) for beam search instead of greedy CTC.
    ``chunk_ms``: streaming chunk (default: the model's recommended one; a chunk-bidirectional graph runs only
    its own). ``endpoint``: the ``EndpointRules``."""

    def __init__(self, model, backend: str = "ort", threads: int = 1, lm=None, chunk_ms: float | None = None,
                 precision: str | None = None, endpoint: EndpointRules | None = None, **backend_options):
        from edgeasr.runtimes.backends import get_backend

        if not Path(model).is_file():
            raise UserError(f"{model}: no such ONNX file")
        b = get_backend(backend, model, threads=threads, precision=precision, **backend_options)
        self._setup(b, lm, chunk_ms, endpoint)

    @classmethod
    def from_backend(cls, backend, lm=None, chunk_ms: float | None = None, endpoint: EndpointRules | None = None):
        """A recognizer over a backend instance you made (e.g. the torch reference of the toolchain)."""
        self = cls.__new__(cls)
        self._setup(backend, lm, chunk_ms, endpoint)
        return self

    def _setup(self, backend, lm, chunk_ms, endpoint) -> None:
        self.backend = backend.activate()
        try:
            meta = self.meta = backend.meta
            self.fbank_opts = fbank_options(meta)
            self.sample_rate = self.fbank_opts.sample_rate
            self.num_bins = self.fbank_opts.num_bins
            self.vocab, self.blank_id = list(meta["vocab"]), int(meta["blank_id"])
            self.frame_seconds = int(meta.get("subsampling", 4)) * self.fbank_opts.frame_shift_ms / 1000.0
            self.endpoint = endpoint or EndpointRules()
            self.lm = None
            if lm is not None:
                from edgeasr.runtimes.lm_decoder import WordLM

                self.lm = WordLM(lm, self.vocab, self.blank_id)
            lm_factory = self.lm.new_decoder if self.lm else None
            self._make_decoder = lambda vocab, blank: _Decoders(vocab, blank, lm_factory)
            self.streaming = meta["graph_kind"] == "step"
            chunk = self.chunk_frames_for(chunk_ms) if chunk_ms is not None else None
            if self.streaming:
                self._session = StreamingSession(backend, chunk, decoder=self._make_decoder)
                self.chunk_frames = self._session.chunk_frames
            else:
                self._session = OfflineSession(backend, chunk, decoder=self._make_decoder)
                self.chunk_frames = self._session.chunk_frames
        except BaseException:
            backend.deactivate()
            raise

    def chunk_frames_for(self, chunk_ms: float) -> int:
        """fbank frames of a ``chunk_ms`` chunk for this model, or a one-line UserError if it cannot run it."""
        if not (isinstance(chunk_ms, (int, float)) and math.isfinite(chunk_ms) and chunk_ms > 0):
            raise UserError(f"chunk of {chunk_ms!r} ms: must be a positive number of milliseconds")
        if chunk_ms > 60_000:
            raise UserError(f"chunk of {chunk_ms:g} ms is longer than a minute; use at most 60000 ms")
        return StreamingSession.chunk_for_ms(self.meta, chunk_ms)  # a chunk-bi graph's own chunk: checked there

    @property
    def chunk_ms(self) -> float:
        return self.chunk_frames * self.fbank_opts.frame_shift_ms

    def create_stream(self) -> RecognizerStream:
        return RecognizerStream(self)

    def decode_streams(self, streams) -> list[str | None]:
        """Run every full chunk the ``streams`` have buffered, batched across streams; each one's new partial."""
        streams = list(streams)
        if not self.streaming:
            return [None] * len(streams)
        return self._session.process([s._inner for s in streams])

    def transcribe(self, samples, sample_rate: int) -> Result:
        """A whole utterance at once (a step graph streams it through its chunks)."""
        s = self.create_stream()
        try:
            s.accept_waveform(sample_rate, samples, decode=False)
            return s.finish()
        finally:
            s.close()

    def _decode_offline(self, feats: np.ndarray):
        dec = self._make_decoder(self.vocab, self.blank_id)
        if len(feats):
            dec.accept(self._session.logprobs(feats))
        dec.finish()
        return dec

    def _result(self, dec: _Decoders) -> Result:
        g = dec.greedy
        return Result(dec.text, g.tokens, [round(f * self.frame_seconds, 3) for f in g.token_frames])

    def close(self) -> None:
        if self.streaming:
            self._session.close()
        self.backend.deactivate()

    def __enter__(self) -> "Recognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
