"""Per-utterance CTC log-probs of the model a user names: a checkpoint (RUN_DIR or shipped name) on the torch
reference, or an exported MODEL.onnx (fp32 or int8) on a runtime backend. `eval` and `lm tune` score both the same
way, so someone handed only the ONNX file can still measure its WER per voice, with or without a word LM."""
from __future__ import annotations

import numpy as np

from runtimes.errors import UserError

ONNX_BATCH = 16  # utterances per full-graph call (sorted by length: little padding)


class ModelLogprobs:
    """``modes``: the direction modes this model can decode in (an ONNX file has the one it was exported in)."""

    def __init__(self, model: str, backend: str | None = None, threads: int = 1, direction: str | None = None):
        from toolchain.cli_runtime import is_onnx

        self.model, self.onnx = model, is_onnx(model)
        if self.onnx:
            from runtimes.session import OfflineSession, fbank_options
            from toolchain.cli_runtime import open_backend

            b = open_backend(model, backend or "ort", stream=False, threads=threads, precision=None)
            self.session = OfflineSession(b)
            meta = b.meta
            self.vocab, self.blank_id = meta["vocab"], int(meta["blank_id"])
            self.fbank = fbank_options(meta)
            self.modes = [meta.get("direction", "l2r")]
            if direction and direction not in self.modes:
                self.close()
                raise UserError(f"{model} was exported in {self.modes[0]} mode; for {direction} export it again "
                                f"(edgeasr export RUN --direction {direction})")
        else:
            if backend:
                raise UserError(f"--backend is for ONNX models; {model} is a checkpoint (it runs on torch)")
            from models.config import DIRECTIONS
            from runtimes.features import FbankOptions
            from runtimes.vocab import BLANK_ID, VOCAB
            from toolchain.cli_model import load_model

            self.net, config = load_model(model, direction)
            self.vocab, self.blank_id = VOCAB, BLANK_ID
            self.fbank = FbankOptions.from_dict(config["features"])
            self.modes = [d for d in DIRECTIONS if self._supports(d)]

    def _supports(self, mode: str) -> bool:
        before = self.net.direction
        try:
            self.net.set_direction(mode)
            return True
        except ValueError:  # alt/bi on a unidirectional mixer
            return False
        finally:
            self.net.set_direction(before)

    @property
    def default_mode(self) -> str:
        return self.modes[0] if self.onnx else self.net.direction

    def utterances(self, entries) -> list:
        """Features of manifest entries with this model's fbank options (``toolchain.dataset.Utterance``)."""
        from toolchain.dataset import load_utterances

        return load_utterances(entries, self.fbank)

    def logprobs(self, utts, mode: str | None = None) -> list[np.ndarray]:
        """``[T', V]`` log-probs per utterance, decoded in ``mode`` (default: the model's own)."""
        mode = mode or self.default_mode
        if mode not in self.modes:
            raise UserError(f"{self.model}: cannot decode in {mode} mode (modes: {', '.join(self.modes)})")
        if not self.onnx:
            from toolchain.train import utterance_logprobs

            self.net.set_direction(mode)
            return utterance_logprobs(self.net, utts, "cpu")
        order = sorted(range(len(utts)), key=lambda i: len(utts[i].feats))
        out: list = [None] * len(utts)
        for k in range(0, len(order), ONNX_BATCH):
            idx = order[k:k + ONNX_BATCH]
            for i, lp in zip(idx, self.session.logprobs_batch([utts[i].feats for i in idx])):
                out[i] = lp
        return out

    def close(self) -> None:
        if self.onnx:
            self.session.backend.deactivate()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
