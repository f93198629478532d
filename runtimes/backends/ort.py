"""ONNX Runtime backends: ``ort`` (CPUExecutionProvider) and ``ort-cuda`` (CUDAExecutionProvider).

Threads are explicit (``intra_op_num_threads``; inter-op 1, sequential execution). For step graphs the carried
states live in ``OrtValue`` buffers bound through ``IOBinding``: two sets per stream batch, ping-ponged (chunk n
reads set A and writes set B, chunk n+1 reads B and writes A), so no state is copied or reallocated between chunks
and no buffer is ever both an input and an output of the same run.
"""
from __future__ import annotations

import numpy as np

from edgeasr.runtimes.backends.base import Backend
from edgeasr.runtimes.errors import UserError
from edgeasr.runtimes.metadata import metadata_from_session


def _import_ort():
    import onnxruntime as ort

    return ort


class _OrtState:
    """Ping-pong OrtValue state buffers for one batch of streams."""

    def __init__(self, cur: list, nxt: list, batch: int):
        self.cur, self.nxt, self.batch = cur, nxt, batch


class OrtBackend(Backend):
    name = "ort"
    extra = "onnxruntime"
    provider = "CPUExecutionProvider"
    device = "cpu"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            ort = _import_ort()
        except ImportError as e:
            return False, f"onnxruntime not importable ({e}): pip install onnxruntime"
        provs = ort.get_available_providers()
        if cls.provider not in provs:
            return False, cls._missing_provider_reason(provs)
        return True, f"onnxruntime {ort.__version__} {cls.provider}"

    @classmethod
    def _missing_provider_reason(cls, provs) -> str:
        return f"{cls.provider} not in onnxruntime providers {provs}"

    def _providers(self):
        return [self.provider]

    def _activate(self) -> None:
        ort = _import_ort()
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 4  # errors become one line naming the file: no native log line before it
        if not self.model_path.is_file():
            raise UserError(f"{self.model_path}: no such file")
        try:
            self.sess = ort.InferenceSession(str(self.model_path), so, providers=self._providers())
        except Exception as e:
            raise UserError(f"{self.model_path}: not a readable ONNX file for onnxruntime "
                            f"({' '.join(str(e).split())[:300]})") from None
        # the metadata of the session just loaded: one read of the file, not a second one only for its keys
        meta = self._meta or metadata_from_session(self.sess, str(self.model_path))
        if self.provider not in self.sess.get_providers():
            raise UserError(f"{self.model_path}: onnxruntime fell back to {self.sess.get_providers()}")
        self.check_graph_shapes({i.name: i.shape for i in self.sess.get_inputs()},
                                {o.name: o.shape for o in self.sess.get_outputs()})
        self.output_names = [o.name for o in self.sess.get_outputs()]
        self._meta = meta

    def _deactivate(self) -> None:
        self.sess = None

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self.sess.run(self.output_names, feeds)
        except Exception as e:
            raise UserError(f"{self.model_path}: inference failed ({' '.join(str(e).split())[:300]})") from None
        return dict(zip(self.output_names, outs))

    # --- state buffers -------------------------------------------------------------------------------------
    def _ortvalue(self, arr: np.ndarray):
        ort = _import_ort()
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), self.device, 0)

    def set_state(self, arrays: dict[str, np.ndarray]) -> _OrtState:
        batch = self.check_state_arrays(arrays)
        cur = [self._ortvalue(arrays[name]) for name, _, _ in self.state_names]
        nxt = [self._ortvalue(np.empty_like(arrays[name])) for name, _, _ in self.state_names]
        return _OrtState(cur, nxt, batch)

    def init_state(self, batch: int) -> _OrtState:
        return self.set_state(self.initial_arrays(batch))

    def reset_state(self, handle: _OrtState) -> _OrtState:
        if self.device != "cpu":
            return self.init_state(handle.batch)
        init = self.initial_arrays(handle.batch)
        for (name, _, _), v in zip(self.state_names, handle.cur):
            v.update_inplace(init[name])  # same buffers, initial values: a new utterance allocates nothing
        return handle

    def get_state(self, handle: _OrtState) -> dict[str, np.ndarray]:
        return {name: np.array(v.numpy()) for (name, _, _), v in zip(self.state_names, handle.cur)}

    def step(self, x: np.ndarray, handle: _OrtState):
        b = self.sess.io_binding()
        b.bind_cpu_input("x", np.ascontiguousarray(x, np.float32))
        for (_, iname, oname), vin, vout in zip(self.state_names, handle.cur, handle.nxt):
            b.bind_ortvalue_input(iname, vin)
            b.bind_ortvalue_output(oname, vout)
        b.bind_output("logprobs", "cpu")
        try:
            self.sess.run_with_iobinding(b)
        except Exception as e:
            raise UserError(f"{self.model_path}: inference failed ({' '.join(str(e).split())[:300]})") from None
        lp = b.get_outputs()[-1].numpy()  # only logprobs leaves the binding; states stay put
        handle.cur, handle.nxt = handle.nxt, handle.cur  # ping-pong: next chunk reads what this one wrote
        return lp, handle


class OrtCudaBackend(OrtBackend):
    name = "ort-cuda"
    extra = "onnxruntime-gpu"
    provider = "CUDAExecutionProvider"
    device = "cuda"

    @classmethod
    def _missing_provider_reason(cls, provs) -> str:
        return (f"CUDAExecutionProvider not available (onnxruntime providers: {', '.join(provs)}): "
                "pip install onnxruntime-gpu on a machine with an NVIDIA GPU and CUDA")

    def _providers(self):
        return [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
