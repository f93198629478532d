"""The torch reference backend: the same interface as ``runtimes.backends`` over a checkpoint (RUN_DIR or shipped
name) instead of an ONNX file. It lives in ``toolchain`` because it needs torch; the deployment path never loads it.

Its metadata is what ``edgeasr export`` would write for the same checkpoint (``exporters.onnx_export.metadata``),
so the sessions drive it exactly like an ONNX backend: ``kind="step"`` runs ``Encoder.step`` with the states in and
out by their ONNX names, ``kind="full"`` runs ``Encoder.forward`` (``x``, ``x_lens`` -> ``logprobs``, ``out_lens``).
"""
from __future__ import annotations

import importlib.util

import numpy as np

from edgeasr.runtimes.backends.base import Backend
from edgeasr.runtimes.errors import UserError


class TorchBackend(Backend):
    name = "torch"
    extra = "torch"

    def __init__(self, model, threads: int = 1, precision: str | None = None, kind: str = "full",
                 direction: str | None = None, chunk_frames: int = 32, **options):
        super().__init__(None, threads, precision, **options)
        self.model_ref = str(model)
        self.kind = kind
        self.direction = direction
        self.chunk_frames = int(chunk_frames)
        self.encoder = None
        self.model_path = model  # for messages

    @classmethod
    def available(cls) -> tuple[bool, str]:
        why = "torch not installed"
        try:
            found = importlib.util.find_spec("torch") is not None
        except (ImportError, ValueError) as e:
            found, why = False, f"torch not importable ({e})"
        if not found:
            return False, f"{why}; the reference backend needs the training extra: pip install 'edgeasr[train]'"
        return True, "torch reference (checkpoint RUN_DIR or shipped name)"

    @property
    def meta(self) -> dict:
        if self._meta is None:
            self._load()
        return self._meta

    def _load(self) -> None:
        from edgeasr.exporters import onnx_export, wrappers
        from edgeasr.models.dirdrop import parse_lookahead
        from edgeasr.pretrained import load_model

        encoder, config = load_model(self.model_ref)
        if self.kind == "step":
            if not encoder.cfg.causal:
                raise UserError(f"{self.model_ref}: not stream-capable (trained with causal=False); "
                                "transcribe without --stream")
            # a step graph streams L2R, or chunk-bi when asked for (R2L within each chunk of chunk_frames)
            direction = "chunk-bi" if (self.direction or "").startswith("chunk-bi") else "l2r"
        else:
            direction = self.direction or encoder.direction
        try:
            la = parse_lookahead(self.direction) if direction == "chunk-bi" and self.direction else 0
            encoder.set_direction(direction, *((self.chunk_frames, la) if direction == "chunk-bi" else ()))
        except ValueError as e:
            raise UserError(f"{self.model_ref}: {e}") from None
        self.encoder = encoder.eval()
        self._meta = onnx_export.metadata(encoder, config, self.kind, direction, self.chunk_frames, "",
                                          wrappers.build(self.kind, encoder), la)

    def _activate(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        if self.encoder is None:
            self._load()

    def _deactivate(self) -> None:
        self.encoder = None

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(feeds["x"], np.float32))
        with torch.no_grad():
            if self.kind == "full":
                lp, lens, _ = self.encoder(x, torch.from_numpy(np.asarray(feeds["x_lens"], np.int64)))
                return {"logprobs": lp.numpy(), "out_lens": lens.numpy()}
            if self.kind == "chunk":
                lp = self.encoder(x, torch.full((x.shape[0],), x.shape[1], dtype=torch.int64))[0]
                return {"logprobs": lp.numpy()}
            state = {name: torch.from_numpy(np.ascontiguousarray(feeds[iname]))
                     for name, iname, _ in self.state_names}
            lp, enc, new = self.encoder.step(x, state)
        out = {"logprobs": lp.numpy(), "encoder_out": enc.numpy()}
        out.update({oname: new[name].numpy() for name, _, oname in self.state_names})
        return out
