"""Sessions driven only by a backend's ONNX metadata (DESIGN.md §3): no model knowledge beyond ``edgeasr.*`` keys.

``StreamingSession`` (step graphs): samples -> ``StreamingFbank`` (kaldi-native-fbank OnlineFbank, the frames the
model was trained on) -> frame buffer -> step graph in chunks of ``chunk_frames`` (a multiple of
``chunk_multiple``) with the states carried between chunks -> streaming greedy CTC with partial results.

- ``Stream.accept_waveform(samples)`` returns the new partial text when it changed, else None.
- ``Stream.flush()`` ends the utterance: the fbank tail is finished, and the frames left over (fewer than a chunk)
  run as one last chunk padded with zero frames to a multiple of ``chunk_multiple``. That is exact, not an
  approximation: step graphs are causal (the exporter refuses anything else), and in the causal 4x subsampling
  encoder frame k reads fbank frames <= 4k only, so the ``ceil(T/4)`` encoder frames of a T-frame utterance never
  see the padding (the pad value is irrelevant; zeros are just the cheapest). Those are exactly the
  ``out_lens = ceil(T/4)`` frames the full graph returns for the same T frames, whatever the full graph pads a
  batch with. Only the state after the padded chunk is affected, and it is discarded.
- A chunk-bi graph with a look-ahead (``lookahead_frames`` R > 0) gets calls of ``chunk_frames + R`` frames: the
  outputs of the chunk count and the states are handed on from its end, and the R frames are read again as the
  next call's chunk; the last call runs whatever is left and all of its outputs count (``exporters.verify``'s
  ``step_windows`` is the same schedule). A partial result lags the audio by chunk + look-ahead.
- ``Stream.reset()`` starts a new utterance on the same stream (fresh fbank, initial states, empty transcript).
- Several streams: ``StreamingSession.process(streams)`` runs every stream that has a full chunk buffered as one
  batch (inputs and states stacked on axis 0, states unstacked afterwards). Each stream still consumes exactly
  ``chunk_frames`` per step at the same boundaries as when run alone, so results equal separate streams.

``OfflineSession`` (full and chunk graphs; a step graph is streamed over the whole utterance): features of the
whole utterance -> logprobs -> greedy CTC. Full graphs take a zero-padded batch with ``x_lens``; chunk graphs
(seed 001 strict chunk mode) run each ``chunk_frames`` chunk alone, the full chunks batched on axis 0.

Both take ``decoder=``: a factory for another decoder with the same interface, e.g. the word-LM beam search of
``runtimes.lm_decoder`` (``WordLM(...).new_decoder``), streaming partials included.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from edgeasr.runtimes.errors import UserError
from edgeasr.runtimes.features import FbankOptions, StreamingFbank, compute_fbank


def fbank_options(meta: dict) -> FbankOptions:
    opts = FbankOptions.from_dict(meta.get("fbank") or {})
    if int(meta.get("sample_rate", opts.sample_rate)) != opts.sample_rate:
        raise UserError(f"metadata sample_rate {meta['sample_rate']} disagrees with fbank sample_rate "
                        f"{opts.sample_rate}")
    return opts


class CtcStreamDecoder:
    """Greedy CTC over logprob chunks; the final text equals ``runtimes.vocab.ctc_greedy`` on the concatenation.

    It also keeps the alignment a caller may want: the encoder frame at which each token was emitted
    (``token_frames``, for timestamps) and the run of non-speech frames at the end (``trailing_silence``, for
    endpointing): blank or the word separator, which these models hold through pauses and silence."""

    def __init__(self, vocab, blank_id: int):
        self.vocab, self.blank_id = list(vocab), int(blank_id)
        self._quiet = {self.blank_id, *(i for i, t in enumerate(self.vocab) if t == " ")}
        self.reset()

    def reset(self) -> None:
        self._pieces: list[str] = []
        self.token_frames: list[int] = []
        self.trailing_silence = 0
        self._prev = -1
        self._text: str | None = ""
        self.frames = 0

    def accept(self, logprobs: np.ndarray) -> bool:
        """Consume ``[T, V]`` logprobs; True when the transcript changed."""
        best = np.asarray(logprobs).argmax(axis=-1)
        changed = False
        prev = self._prev
        for i, t in enumerate(best.tolist()):
            self.trailing_silence = self.trailing_silence + 1 if t in self._quiet else 0
            if t != self.blank_id and t != prev:
                self._pieces.append(self.vocab[t])
                self.token_frames.append(self.frames + i)
                changed = True
            prev = t
        self._prev = prev
        self.frames += len(best)
        if changed:
            self._text = None
        return changed

    def finish(self) -> None:
        """End of utterance (greedy decoding has nothing left to decide)."""

    @property
    def tokens(self) -> list[str]:
        return list(self._pieces)

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = re.sub(r"\s+", " ", "".join(self._pieces).strip())
        return self._text


@dataclass
class _Group:
    """Streams whose states currently live stacked in one backend handle (row i = members[i])."""
    members: list
    handle: object


class Stream:
    """One audio stream (one utterance at a time). Create with ``StreamingSession.new_stream()``."""

    def __init__(self, session: "StreamingSession"):
        self.session = session
        self.handle = None  # this stream's own (batch 1) backend state, when it is not in a group
        self.group: _Group | None = None
        self.partials = 0
        self._new_utterance()

    def _new_utterance(self) -> None:
        s = self.session
        self.fbank = StreamingFbank(s.fbank_opts)
        self._frames = np.zeros((0, s.num_bins), np.float32)
        self.decoder = s.make_decoder()
        self.frames_in = 0
        self.finished = False
        self._last_partial = ""
        s.logprobs.pop(id(self), None)  # kept log-probs are per utterance

    # --- feeding ---------------------------------------------------------------------------------------------
    def accept_waveform(self, samples: np.ndarray) -> str | None:
        """Float samples in [-1, 1] at the model's rate; returns the partial transcript when it changed."""
        self.feed(samples)
        self.session._run([self])
        return self._partial()

    def feed(self, samples: np.ndarray) -> None:
        """Buffer samples without running the model (``StreamingSession.process`` then batches streams)."""
        if self.finished:
            raise UserError("stream already flushed: call reset() to start a new utterance")
        self.fbank.accept(samples)
        self.feed_features(self.fbank.pop())

    def feed_features(self, frames: np.ndarray) -> None:
        frames = np.asarray(frames, np.float32)
        if frames.ndim != 2 or frames.shape[1] != self.session.num_bins:
            raise UserError(f"features must be [T, {self.session.num_bins}], got {list(frames.shape)}")
        if len(frames):
            self._frames = np.concatenate([self._frames, frames]) if len(self._frames) else frames
            self.frames_in += len(frames)

    def accept_features(self, frames: np.ndarray) -> str | None:
        """Fbank frames ``[T, F]`` (for callers with their own frontend); returns the changed partial or None."""
        self.feed_features(frames)
        self.session._run([self])
        return self._partial()

    def _partial(self) -> str | None:
        text = self.decoder.text
        if text != self._last_partial:
            self._last_partial = text
            self.partials += 1
            return text
        return None

    @property
    def ready(self) -> int:
        return len(self._frames)

    def _take(self, n: int, lookahead: int = 0) -> np.ndarray:
        """The next ``n`` frames and the ``lookahead`` after them; only the ``n`` are consumed."""
        chunk, self._frames = self._frames[:n + lookahead], self._frames[n:]
        return chunk

    def flush(self) -> str:
        """End of stream: finish the fbank, run the padded remainder, return the final transcript."""
        if not self.finished:
            self.fbank.finish()
            self.feed_features(self.fbank.pop())
            self.session._run([self])
            self.session._flush_remainder(self)
            self.decoder.finish()
            self.finished = True
        return self.text

    def reset(self) -> None:
        """New utterance on this stream: initial states (backend ``reset_state``), fresh fbank and transcript."""
        self.session._detach(self)
        if self.handle is not None:
            self.handle = self.session.backend.reset_state(self.handle)
        self._new_utterance()

    def close(self) -> None:
        self.session._detach(self)
        self.session.logprobs.pop(id(self), None)  # a later stream may reuse this id
        if self.handle is not None:
            self.session.backend.release_state(self.handle)
            self.handle = None

    @property
    def text(self) -> str:
        return self.decoder.text

    @property
    def logprob_frames(self) -> int:
        return self.decoder.frames


class StreamingSession:
    """Streams over one step-graph backend (activated here if it is not already)."""

    def __init__(self, backend, chunk_frames: int | None = None, keep_logprobs: bool = False, decoder=None):
        """``decoder``: a ``(vocab, blank_id) -> decoder`` factory (e.g. ``WordLM.new_decoder``) for each
        utterance; greedy CTC when None."""
        self.backend = backend.activate()
        meta = backend.meta
        if meta["graph_kind"] != "step":
            raise UserError(f"{backend.model_path}: a {meta['graph_kind']} graph cannot stream; export a step "
                            "graph (edgeasr export --kind step) or transcribe without --stream")
        self.meta = meta
        self.fbank_opts = fbank_options(meta)
        self.num_bins = self.fbank_opts.num_bins
        self.vocab, self.blank_id = meta["vocab"], int(meta["blank_id"])
        self.multiple = int(meta.get("chunk_multiple", meta.get("subsampling", 4)))
        self.chunk_frames = int(chunk_frames or meta.get("chunk_frames") or 8 * self.multiple)
        fixed = meta.get("direction") == "chunk-bi" and meta.get("chunk_frames")
        if fixed and self.chunk_frames != int(meta["chunk_frames"]):
            # R2L runs within each call: any other chunking computes something the model was not exported for
            shift = fbank_options(meta).frame_shift_ms
            la = int(meta.get("lookahead_frames") or 0)
            raise UserError(f"{backend.model_path}: a chunk-bi graph streams only in its fixed chunk of "
                            f"{int(meta['chunk_frames']) * shift:g} ms ({meta['chunk_frames']} fbank frames"
                            + (f", plus a {la * shift:g} ms look-ahead" if la else "") +
                            f"), not {self.chunk_frames * shift:g} ms")
        if self.chunk_frames <= 0 or self.chunk_frames % self.multiple:
            raise UserError(f"chunk of {self.chunk_frames} fbank frames is not a positive multiple of "
                            f"{self.multiple} (edgeasr.chunk_multiple)")
        self.lookahead = int(meta.get("lookahead_frames", 0) or 0)
        if self.lookahead < 0 or self.lookahead % self.multiple or (self.lookahead and not fixed):
            raise UserError(f"{backend.model_path}: lookahead_frames={meta.get('lookahead_frames')} needs a chunk-bi "
                            f"graph and a non-negative multiple of {self.multiple}")
        prepare = getattr(backend, "prepare_chunk", None)
        if prepare is not None:  # e.g. OpenVINO compiles this call length with static shapes, before any audio
            prepare(self.chunk_frames + self.lookahead)
        self.keep_logprobs = keep_logprobs
        self._decoder_factory = decoder or CtcStreamDecoder
        self.logprobs: dict[int, list[np.ndarray]] = {}
        self._group: _Group | None = None
        self.chunks_run = 0
        self.stream = self.new_stream()  # the default stream for single-stream use

    def make_decoder(self):
        return self._decoder_factory(self.vocab, self.blank_id)

    @classmethod
    def chunk_for_ms(cls, meta: dict, ms: float) -> int:
        """fbank frames for a chunk of ``ms`` milliseconds, rounded to a multiple of chunk_multiple (at least one)."""
        shift = fbank_options(meta).frame_shift_ms
        mult = int(meta.get("chunk_multiple", 4))
        return max(mult, int(round(ms / shift / mult)) * mult)

    def new_stream(self) -> Stream:
        return Stream(self)

    # single-stream convenience ---------------------------------------------------------------------------------
    def accept_waveform(self, samples) -> str | None:
        return self.stream.accept_waveform(samples)

    def flush(self) -> str:
        return self.stream.flush()

    def reset(self) -> None:
        self.stream.reset()

    @property
    def text(self) -> str:
        return self.stream.text

    # --- batching ----------------------------------------------------------------------------------------------
    def process(self, streams) -> list[str | None]:
        """Run every full chunk buffered in ``streams`` (batched across streams); returns each changed partial."""
        self._run(list(streams))
        return [s._partial() for s in streams]

    def _detach(self, stream: Stream) -> None:
        """Give every member of ``stream``'s group its own batch-1 state again (unstack on axis 0)."""
        g = stream.group
        if g is None:
            return
        b = self.backend
        arrays = b.get_state(g.handle)
        for i, m in enumerate(g.members):
            m.handle = b.set_state({k: np.ascontiguousarray(v[i:i + 1]) for k, v in arrays.items()})
            m.group = None
        b.release_state(g.handle)
        if self._group is g:
            self._group = None

    def _handle_for(self, streams: list[Stream]):
        b = self.backend
        if len(streams) == 1:
            s = streams[0]
            self._detach(s)
            if s.handle is None:
                s.handle = b.init_state(1)
            return s.handle
        g = self._group
        if g is not None and len(g.members) == len(streams) and all(a is c for a, c in zip(g.members, streams)):
            return g.handle
        for s in streams:
            self._detach(s)
        parts = [b.get_state(s.handle) if s.handle is not None else b.initial_arrays(1) for s in streams]
        stacked = {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
        for s in streams:
            if s.handle is not None:
                b.release_state(s.handle)
                s.handle = None
        g = _Group(list(streams), b.set_state(stacked))
        for s in streams:
            s.group = g
        self._group = g
        return g.handle

    def _step(self, streams: list[Stream], x: np.ndarray, emit: int | None = None) -> None:
        """One call; ``emit``: encoder frames whose outputs count (a look-ahead call's chunk), None for all."""
        handle = self._handle_for(streams)
        lp, handle = self.backend.step(x, handle)
        lp = lp[:, :emit]
        if len(streams) == 1:
            streams[0].handle = handle
        else:
            streams[0].group.handle = handle
        self.chunks_run += 1
        for i, s in enumerate(streams):
            s.decoder.accept(lp[i])
            if self.keep_logprobs:
                self.logprobs.setdefault(id(s), []).append(lp[i])

    def _run(self, streams: list[Stream]) -> None:
        n, la = self.chunk_frames, self.lookahead
        emit = n // self.multiple if la else None
        while True:
            ready = [s for s in streams if s.ready >= n + la and not s.finished]
            if not ready:
                return
            self._step(ready, np.stack([s._take(n, la) for s in ready]), emit)

    def _flush_remainder(self, stream: Stream) -> None:
        rest = stream._take(stream.ready)
        if len(rest):
            pad = -len(rest) % self.multiple
            x = np.concatenate([rest, np.zeros((pad, self.num_bins), np.float32)]) if pad else rest
            self._step([stream], x[None])

    def flush_all(self, streams) -> list[str]:
        """Flush several streams; their remainders run one by one (the padded lengths differ)."""
        return [s.flush() for s in streams]

    def stream_logprobs(self, stream: Stream) -> np.ndarray:
        return np.concatenate(self.logprobs.get(id(stream), []) or [np.zeros((0, len(self.vocab)), np.float32)])

    def close(self) -> None:
        self.stream.close()


class OfflineSession:
    """Whole-utterance decoding over a full, chunk or step graph backend."""

    def __init__(self, backend, chunk_frames: int | None = None, decoder=None):
        """``decoder``: as for ``StreamingSession`` (greedy CTC when None)."""
        self.backend = backend.activate()
        self.meta = backend.meta
        self.kind = self.meta["graph_kind"]
        self.fbank_opts = fbank_options(self.meta)
        self.vocab, self.blank_id = self.meta["vocab"], int(self.meta["blank_id"])
        self.chunk_frames = int(chunk_frames or self.meta.get("chunk_frames") or 32)
        self._decoder_factory = decoder or CtcStreamDecoder

    def features(self, samples: np.ndarray) -> np.ndarray:
        return compute_fbank(samples, self.fbank_opts)

    def logprobs_batch(self, feats: list[np.ndarray]) -> list[np.ndarray]:
        """Per-utterance ``[T', V]`` logprobs for a list of ``[T, F]`` features."""
        if self.kind == "full":
            T = max(len(f) for f in feats)
            x = np.zeros((len(feats), T, self.fbank_opts.num_bins), np.float32)
            for i, f in enumerate(feats):
                x[i, :len(f)] = f
            lens = np.array([len(f) for f in feats], np.int64)
            out = self.backend.infer({"x": x, "x_lens": lens})
            return [out["logprobs"][i, :int(n)] for i, n in enumerate(out["out_lens"])]
        if self.kind == "chunk":
            return [self._chunked(f) for f in feats]
        result = []
        for f in feats:  # a step graph: stream the utterance through one chunk size
            s = StreamingSession(self.backend, self.chunk_frames, keep_logprobs=True)
            s.stream.accept_features(f)
            s._flush_remainder(s.stream)
            result.append(s.stream_logprobs(s.stream))
            s.close()
        return result

    def _chunked(self, f: np.ndarray) -> np.ndarray:
        n, c = len(f), self.chunk_frames
        full = n // c
        parts = []
        if full:
            out = self.backend.infer({"x": np.ascontiguousarray(f[:full * c].reshape(full, c, -1))})["logprobs"]
            parts.append(out.reshape(-1, out.shape[-1]))
        if n % c:
            parts.append(self.backend.infer({"x": np.ascontiguousarray(f[full * c:][None])})["logprobs"][0])
        return np.concatenate(parts) if parts else np.zeros((0, len(self.vocab)), np.float32)

    def logprobs(self, feats: np.ndarray) -> np.ndarray:
        return self.logprobs_batch([feats])[0]

    def decode(self, logprobs: np.ndarray) -> str:
        d = self._decoder_factory(self.vocab, self.blank_id)
        d.accept(logprobs)
        d.finish()
        return d.text

    def transcribe(self, samples: np.ndarray) -> str:
        return self.decode(self.logprobs(self.features(samples)))
