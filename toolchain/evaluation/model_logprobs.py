"""Per-utterance CTC log-probs of the model a user names: a checkpoint (RUN_DIR or shipped name) on the torch
reference, or an exported MODEL.onnx (fp32 or int8) on a runtime backend. `eval` and `lm tune` score both the same
way, so someone handed only the ONNX file can still measure its WER per voice, with or without a word LM."""
from __future__ import annotations

import numpy as np

from edgeasr.models.dirdrop import STRICT, mode_string
from edgeasr.runtimes.errors import UserError

BATCH_FRAMES = 40000  # padded fbank frames per call, as edgeasr.training.train.utterance_logprobs batches


def exported_mode(meta: dict) -> str:
    """The mode an ONNX file decodes in, as a mode string (``chunk-bi:640ms`` names its chunk,
    ``chunk-bi:640ms+160ms`` its look-ahead too)."""
    mode = meta.get("direction", "l2r")
    shift = float((meta.get("fbank") or {}).get("frame_shift_ms", 10.0))
    return mode_string(mode, int(meta.get("chunk_frames") or 0), int(meta.get("lookahead_frames") or 0), shift)


class ModelLogprobs:
    """``modes``: the direction modes this model can decode in (an ONNX file has the one it was exported in)."""

    def __init__(self, model: str, backend: str | None = None, threads: int = 1, direction: str | None = None):
        from edgeasr.model_ref import exported_mode_error, is_onnx

        self.model, self.onnx = model, is_onnx(model)
        if self.onnx:
            from edgeasr.runtimes.session import OfflineSession, fbank_options
            from edgeasr.model_ref import open_backend

            b = open_backend(model, backend or "ort", stream=False, threads=threads, precision=None)
            self.session = OfflineSession(b)
            meta = b.meta
            self.vocab, self.blank_id = meta["vocab"], int(meta["blank_id"])
            self.fbank = fbank_options(meta)
            self.modes = [exported_mode(meta)]
            if direction and direction not in self.modes:
                self.close()
                raise exported_mode_error(model, self.modes[0], [direction])
        else:
            if backend:
                raise UserError(f"--backend is for ONNX models; {model} is a checkpoint (it runs on torch)")
            from edgeasr.models.config import CHUNK_BI, DIRECTIONS
            from edgeasr.runtimes.features import FbankOptions
            from edgeasr.runtimes.vocab import BLANK_ID, VOCAB
            from edgeasr.pretrained import load_model

            self.net, config = load_model(model, direction)
            self.vocab, self.blank_id = VOCAB, BLANK_ID
            self.fbank = FbankOptions.from_dict(config["features"])
            self.modes = [d for d in DIRECTIONS if self.supports(d)]
            if self.supports(f"{CHUNK_BI}:640ms"):
                self.modes.append(CHUNK_BI)  # with any chunk: chunk-bi:<ms>ms
            self.modes.append(STRICT)  # strict:<ms>ms, every chunk alone in the model's own mode

    def supports(self, mode: str) -> bool:
        """Whether this model decodes in ``mode`` (a plain mode or e.g. ``chunk-bi:640ms``)."""
        if self.onnx:
            return mode in self.modes
        before = self.net.mode  # the whole mode string: chunk size and look-ahead included
        try:
            self.net.set_direction(mode)
            return True
        except ValueError:  # alt/bi on a unidirectional mixer
            return False
        finally:
            self.net.set_direction(before)

    @property
    def default_modes(self) -> list[str]:
        """What ``eval`` decodes without ``--direction``: an ONNX file's own mode; a checkpoint trained for strict
        chunks at each of its training sizes; any other checkpoint in l2r, alt and bi (those its mixer has)."""
        if self.onnx:
            return list(self.modes)
        strict = sorted(self.net.cfg.strict_chunk_ms)
        return [f"{STRICT}:{ms:g}ms" for ms in strict] if strict else ["l2r", "alt", "bi"]

    @property
    def default_mode(self) -> str:
        return self.modes[0] if self.onnx else self.net.direction

    def utterances(self, entries, bad: list | None = None, progress=None) -> list:
        """Features of manifest entries with this model's fbank options (``edgeasr.training.dataset.Utterance``);
        ``bad``: collect unreadable rows there and leave them out (``load_utterances``); ``progress(n)`` as they
        finish."""
        from edgeasr.training.dataset import load_utterances

        return load_utterances(entries, self.fbank, bad=bad, progress=progress)

    def logprobs(self, utts, mode: str | None = None, progress=None) -> list[np.ndarray]:
        """``[T', V]`` log-probs per utterance, decoded in ``mode`` (default: the model's own); ``progress(n)``
        after each batch of n utterances."""
        from edgeasr.training.dataset import make_batches

        mode = mode or self.default_mode
        if not self.supports(mode):
            raise UserError(f"{self.model}: cannot decode in {mode} mode (modes: {', '.join(self.modes)})")
        if not self.onnx:
            from edgeasr.training.train import utterance_logprobs

            self.net.set_direction(mode)
        out: list = [None] * len(utts)
        for idx in make_batches(utts, BATCH_FRAMES):  # similar lengths together: little padding
            batch = [utts[i] for i in idx]
            lps = self.session.logprobs_batch([u.feats for u in batch]) if self.onnx else \
                utterance_logprobs(self.net, batch, "cpu", BATCH_FRAMES)  # one batch: the same padding as before
            for i, lp in zip(idx, lps):
                out[i] = lp
            if progress:
                progress(len(idx))
        return out

    def close(self) -> None:
        if self.onnx:
            self.session.backend.deactivate()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
