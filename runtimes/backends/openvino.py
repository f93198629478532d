"""OpenVINO CPU backend.

Precision: ``INFERENCE_PRECISION_HINT=f32`` unless ``precision="bf16"`` is asked for explicitly. OpenVINO's CPU
plugin runs bf16 by default on CPUs with AVX512-BF16/AMX (DESIGN.md §5: 1.2e-2 max error against 3.6e-7 for ORT),
so f32 is what parity needs; bf16 is reported as its own precision.

Two streaming modes, both with static input shapes where the stream allows:

- stateful (``stateful=True``, the default for step graphs): ``openvino.passes.MakeStateful`` turns each
  ``in.<name>`` Parameter / ``out.<name>`` Result pair into a ReadValue/Assign variable that lives inside the infer
  request; ``reset_state()`` starts a new utterance. The batch axis is always static before the pass (one compiled
  model per batch size): with a dynamic batch, ``reset_state()`` yields zero-*sized* variables and the next
  inference silently returns empty outputs (measured with OpenVINO 2026.4).
- explicit state (``stateful=False``): states are graph inputs/outputs, carried as numpy arrays.

Static shapes: ``prepare_chunk(frames)`` (called by ``StreamingSession`` with its chunk length) compiles a model with
``x`` fixed to ``[batch, frames, F]`` up front: the CPU plugin then folds every shape computation (DESIGN.md §5
measured x1.28-1.34 for fp32). Other lengths (an utterance's shorter last chunk) run the dynamic-length model: never
a compile inside a stream (a lazy one showed as 0.5-1.8 s p99 chunk latencies in the parity report). A stateful
stream keeps one infer request per compiled model and hands its state to the next one when the length changes (a
copy of the small state tensors), so results stay exact.

int8 (QDQ) step graphs run stateful too when the CPU plugin compiles their MakeStateful form (OpenVINO 2026.4's
low-precision pipeline threw ``[AssignAndReadValueTransformation] index out of range`` on the earlier int8 recipe,
whose Q/DQ sat on MatMul outputs next to the state); if that compile fails the backend falls back to explicit state
I/O by itself and says why with a notice (``self.notices`` and one ``notice:`` line on stderr). ``mode`` says which.
"""
from __future__ import annotations

import sys

import numpy as np

from edgeasr.runtimes.backends.base import Backend
from edgeasr.runtimes.errors import UserError

PRECISIONS = {"fp32": "f32", "f32": "f32", None: "f32", "bf16": "bf16", "fp16": "f16", "f16": "f16"}


def compile_config(precision: str | None = None, threads: int = 1) -> dict:
    """OpenVINO CPU compile properties of every edgeasr session: the precision asked for (fp32 unless bf16/fp16 is
    named), ``threads`` inference threads, one latency-oriented stream."""
    return {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "INFERENCE_NUM_THREADS": str(threads),
            "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}


class _OvState:
    """One batch of streams: an infer request per compiled model used (``None``: dynamic length), which of them
    holds the stream's state (``cur``), and state arrays still to load into the next request (``pending``)."""

    def __init__(self, batch: int, variables: dict, pending: dict):
        self.batch, self.variables, self.pending = batch, variables, pending
        self.requests: dict = {}
        self.cur = None


class OpenVinoBackend(Backend):
    name = "openvino"
    extra = "openvino"

    def __init__(self, model, threads: int = 1, precision: str | None = None, stateful: bool = True,
                 static_shapes: bool = True, **options):
        super().__init__(model, threads, precision, **options)
        if precision not in PRECISIONS:
            raise UserError(f"openvino: unknown precision {precision!r}; choose f32 or bf16")
        self.stateful, self.static_shapes = stateful, static_shapes
        self.notices: list[str] = []
        self._compiled: dict[tuple, tuple] = {}  # (batch, frames or None, stateful) -> (compiled, {var id: name})
        self._static: set[int] = set()  # chunk lengths (fbank frames) with a static-shape model: prepare_chunk
        self._requests: dict[tuple, object] = {}  # explicit-state mode: one request per compiled model

    @property
    def mode(self) -> str:
        """How step graphs run, for reports: stateful or explicit state I/O, static or dynamic shapes."""
        if not self.active or self.meta.get("graph_kind") != "step":
            return "infer"
        state = "stateful" if self.stateful else "explicit state I/O"
        return f"{state}, {'static' if self.static_shapes and self._static else 'dynamic'} shapes"

    def prepare_chunk(self, frames: int) -> None:
        """Compile the step graph for chunks of ``frames`` fbank frames with static shapes (single stream now, other
        batch sizes on first use); other lengths keep running the dynamic-length model."""
        if not self.static_shapes or frames in self._static:
            return
        self._static.add(int(frames))
        if self.active and self.meta.get("graph_kind") == "step":
            self._step_compiled(1, int(frames))

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import openvino as ov
        except ImportError as e:
            return False, f"openvino not importable ({e}): pip install edgeasr[openvino]"
        try:
            devices = ov.Core().available_devices
        except Exception as e:  # pragma: no cover - broken install
            return False, f"openvino {ov.__version__} cannot enumerate devices ({e})"
        if "CPU" not in devices:
            return False, f"openvino {ov.__version__}: no CPU device (devices: {devices})"
        return True, f"openvino {ov.__version__.split('-')[0]} CPU"

    @property
    def config(self) -> dict:
        return compile_config(self.precision, self.threads)

    def _read(self):
        import openvino as ov

        try:
            return ov.Core().read_model(str(self.model_path))
        except Exception as e:
            raise UserError(f"{self.model_path}: openvino cannot read it ({' '.join(str(e).split())[:300]})") \
                from None

    def _activate(self) -> None:
        import openvino as ov

        meta = self.meta
        self.core = ov.Core()
        model = self._read()
        graph_inputs = {}
        for p in model.inputs:
            ps = p.get_partial_shape()
            graph_inputs[p.get_any_name()] = [d.get_length() if d.is_static else -1 for d in ps]
        self.check_graph_shapes(graph_inputs)
        try:
            self.compiled = self.core.compile_model(model, "CPU", self.config)
        except Exception as e:
            raise UserError(f"{self.model_path}: openvino cannot compile it ({' '.join(str(e).split())[:300]})") \
                from None
        self.request = self.compiled.create_infer_request()
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self._meta = meta
        if '"format":"dynamic"' in str(meta.get("quant_recipe", "")).replace(" ", ""):
            self._notice(f"{self.model_path}: dynamic int8 (edgeasr quantize --format dynamic) is an ONNX Runtime "
                         "format: OpenVINO runs it slower than fp32 (measured x0.4-0.6 at 320 ms); use the QDQ file")
        if meta["graph_kind"] != "step":
            self.stateful = False
        if self.stateful:  # compile the single-stream stateful model now, not inside the first chunk
            try:
                self._step_compiled(1, None)
            except UserError as e:
                self.stateful = False
                self._notice(f"{self.model_path}: step graph runs with explicit state I/O on OpenVINO (the CPU "
                             f"plugin cannot compile its MakeStateful form: {e})")
        if meta["graph_kind"] == "step":
            for frames in sorted(self._static):  # chunk lengths prepared before activation
                self._step_compiled(1, frames)

    def _notice(self, msg: str) -> None:
        self.notices.append(msg)
        print(f"notice: {msg}", file=sys.stderr)

    def _deactivate(self) -> None:
        self.request = self.compiled = None
        self._compiled.clear()
        self._requests.clear()

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._infer(self.request, feeds)

    def _infer(self, request, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            res = request.infer(feeds)
        except Exception as e:
            raise UserError(f"{self.model_path}: inference failed ({' '.join(str(e).split())[:300]})") from None
        return {o.get_any_name(): np.array(v) for o, v in res.items()}

    # --- compiled step models ------------------------------------------------------------------------------
    def _frames_key(self, frames: int):
        """``frames`` when this length runs a static-shape model (``prepare_chunk``), None for the dynamic one."""
        return frames if self.static_shapes and frames in self._static else None

    def _step_compiled(self, batch: int, frames: int | None):
        """(compiled model, {variable id: state name}) of the step graph with batch fixed to ``batch``, ``x``'s
        length fixed to ``frames`` (None: dynamic) and, in stateful mode, states internal."""
        key = (batch, frames, self.stateful)
        if key not in self._compiled:
            import openvino as ov
            import openvino.passes

            model = self._read()
            F = int(self.meta["fbank"].get("num_bins", 80)) if self.meta.get("fbank") else 80
            shapes = {"x": ov.PartialShape([batch, -1 if frames is None else frames, F])}
            shapes.update({iname: ov.PartialShape([batch, *s["shape"]])
                           for (_, iname, _), s in zip(self.state_names, self.meta["states"])})
            model.reshape(shapes)
            var_ids = {}
            if self.stateful:
                pairs = []
                for name, iname, oname in self.state_names:
                    par, res = model.input(iname).get_node(), model.output(oname).get_node()
                    pairs.append((par, res))
                    var_ids[par.get_friendly_name() + res.get_friendly_name()] = name
                mgr = ov.passes.Manager()
                mgr.register_pass(ov.passes.MakeStateful(pairs))
                mgr.run_passes(model)
            try:
                compiled = self.core.compile_model(model, "CPU", self.config)
            except Exception as e:
                raise UserError(' '.join(str(e).split())[:300]) from None
            if self.stateful:
                found = {v.name for v in compiled.create_infer_request().query_state()}
                if set(var_ids) - found:
                    raise UserError(f"MakeStateful produced variables {sorted(found)[:3]}..., expected "
                                    f"{sorted(var_ids)[:3]}...")
            self._compiled[key] = (compiled, var_ids)
        return self._compiled[key]

    # --- streaming state -----------------------------------------------------------------------------------
    def init_state(self, batch: int):
        if not self.stateful:
            return super().init_state(batch)
        return _OvState(batch, self._step_compiled(batch, None)[1], self.initial_arrays(batch))

    def reset_state(self, handle):
        if not self.stateful:
            return super().reset_state(handle)
        handle.pending, handle.cur = self.initial_arrays(handle.batch), None  # loaded by the next step
        return handle

    def set_state(self, arrays: dict[str, np.ndarray]):
        if not self.stateful:
            return super().set_state(arrays)
        batch = self.check_state_arrays(arrays)
        return _OvState(batch, self._step_compiled(batch, None)[1],
                        {k: np.ascontiguousarray(v) for k, v in arrays.items()})

    def _read_state(self, request, variables: dict) -> dict[str, np.ndarray]:
        return {variables[v.name]: np.array(v.state.data) for v in request.query_state()}

    def get_state(self, handle) -> dict[str, np.ndarray]:
        if not self.stateful:
            return super().get_state(handle)
        if handle.pending is not None:
            return {k: np.array(v) for k, v in handle.pending.items()}
        return self._read_state(handle.requests[handle.cur], handle.variables)

    def step(self, x: np.ndarray, handle):
        x = np.ascontiguousarray(x, np.float32)
        key = self._frames_key(x.shape[1])
        if not self.stateful:  # explicit state: the base class's numpy states, on the model for this length
            if (x.shape[0], key) not in self._requests:
                self._requests[x.shape[0], key] = self._step_compiled(x.shape[0], key)[0].create_infer_request()
            feeds = {"x": x, **{iname: handle[name] for name, iname, _ in self.state_names}}
            out = self._infer(self._requests[x.shape[0], key], feeds)
            return out["logprobs"], {name: out[oname] for name, _, oname in self.state_names}
        request = handle.requests.get(key)
        if request is None:
            request = handle.requests[key] = self._step_compiled(handle.batch, key)[0].create_infer_request()
        if handle.cur != key and handle.pending is None:  # the chunk length changed: hand the state over
            handle.pending = self._read_state(handle.requests[handle.cur], handle.variables)
        if handle.pending is not None:
            import openvino as ov

            for v in request.query_state():
                v.state = ov.Tensor(np.ascontiguousarray(handle.pending[handle.variables[v.name]]))
            handle.pending = None
        handle.cur = key
        try:
            res = request.infer({"x": x})
        except Exception as e:
            raise UserError(f"{self.model_path}: inference failed ({' '.join(str(e).split())[:300]})") from None
        lp = next(np.array(v) for o, v in res.items() if o.get_any_name() == "logprobs")
        return lp, handle
