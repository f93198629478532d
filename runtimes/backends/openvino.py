"""OpenVINO CPU backend.

Precision: ``INFERENCE_PRECISION_HINT=f32`` unless ``precision="bf16"`` is asked for explicitly. OpenVINO's CPU
plugin runs bf16 by default on CPUs with AVX512-BF16/AMX (DESIGN.md §5: 1.2e-2 max error against 3.6e-7 for ORT),
so f32 is what parity needs; bf16 is reported as its own precision.

Two streaming modes:

- explicit state (``stateful=False``): states are graph inputs/outputs, carried as numpy arrays (the base class).
- stateful (``stateful=True``, the default for step graphs): ``openvino.passes.MakeStateful`` turns each
  ``in.<name>`` Parameter / ``out.<name>`` Result pair into a ReadValue/Assign variable that lives inside the infer
  request; ``reset_state()`` starts a new utterance. The batch axis is made static before the pass (one compiled
  model per batch size): with a dynamic batch, ``reset_state()`` yields zero-*sized* variables and the next
  inference silently returns empty outputs (measured with OpenVINO 2026.4).

int8 (QDQ) step graphs always run in explicit-state mode: OpenVINO 2026.4's CPU plugin fails to compile the
MakeStateful version of a QDQ step graph (``[AssignAndReadValueTransformation] index out of range`` in its
low-precision pipeline), while the same graph with states as I/O compiles and runs the int8 kernels. The backend
switches by itself and says so with a notice (``self.notices`` and one ``notice:`` line on stderr).
"""
from __future__ import annotations

import sys

import numpy as np

from edgeasr.runtimes.backends.base import Backend
from edgeasr.runtimes.errors import UserError

PRECISIONS = {"fp32": "f32", "f32": "f32", None: "f32", "bf16": "bf16", "fp16": "f16", "f16": "f16"}


class _OvState:
    def __init__(self, request, batch: int, variables: dict):
        self.request, self.batch, self.variables = request, batch, variables


class OpenVinoBackend(Backend):
    name = "openvino"
    extra = "openvino"

    def __init__(self, model, threads: int = 1, precision: str | None = None, stateful: bool = True, **options):
        super().__init__(model, threads, precision, **options)
        if precision not in PRECISIONS:
            raise UserError(f"openvino: unknown precision {precision!r}; choose f32 or bf16")
        self.stateful = stateful
        self.notices: list[str] = []
        self._stateful_models: dict[int, tuple] = {}

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
        return {"INFERENCE_PRECISION_HINT": PRECISIONS[self.precision], "INFERENCE_NUM_THREADS": str(self.threads),
                "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}

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
        if meta["graph_kind"] != "step":
            self.stateful = False
        elif self.stateful and str(meta.get("precision", "fp32")).lower() == "int8":
            self.stateful = False
            self._notice(f"{self.model_path}: int8 step graph runs with explicit state I/O on OpenVINO (its "
                         "CPU plugin cannot compile the MakeStateful form of a QDQ graph: "
                         "AssignAndReadValueTransformation index out of range)")
        if self.stateful:
            self._stateful_compiled(1)  # compile the single-stream stateful model now, not inside the first chunk

    def _notice(self, msg: str) -> None:
        self.notices.append(msg)
        print(f"notice: {msg}", file=sys.stderr)

    def _deactivate(self) -> None:
        self.request = self.compiled = None
        self._stateful_models.clear()

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            res = self.request.infer(feeds)
        except Exception as e:
            raise UserError(f"{self.model_path}: inference failed ({' '.join(str(e).split())[:300]})") from None
        return {o.get_any_name(): np.array(v) for o, v in res.items()}

    # --- stateful mode -------------------------------------------------------------------------------------
    def _stateful_compiled(self, batch: int):
        """(compiled model, {state name: variable id}) with states internal, batch fixed to ``batch``."""
        if batch not in self._stateful_models:
            import openvino as ov
            import openvino.passes

            model = self._read()
            F = int(self.meta["fbank"].get("num_bins", 80)) if self.meta.get("fbank") else 80
            shapes = {"x": ov.PartialShape([batch, -1, F])}
            shapes.update({iname: ov.PartialShape([batch, *s["shape"]])
                           for (_, iname, _), s in zip(self.state_names, self.meta["states"])})
            model.reshape(shapes)
            pairs, var_ids = [], {}
            for name, iname, oname in self.state_names:
                par, res = model.input(iname).get_node(), model.output(oname).get_node()
                pairs.append((par, res))
                var_ids[par.get_friendly_name() + res.get_friendly_name()] = name
            mgr = ov.passes.Manager()
            mgr.register_pass(ov.passes.MakeStateful(pairs))
            mgr.run_passes(model)
            compiled = self.core.compile_model(model, "CPU", self.config)
            probe = compiled.create_infer_request()
            found = {v.name for v in probe.query_state()}
            if set(var_ids) - found:
                raise UserError(f"{self.model_path}: MakeStateful produced variables {sorted(found)[:3]}..., "
                                f"expected {sorted(var_ids)[:3]}...")
            self._stateful_models[batch] = (compiled, var_ids)
        return self._stateful_models[batch]

    def init_state(self, batch: int):
        if not self.stateful:
            return super().init_state(batch)
        compiled, var_ids = self._stateful_compiled(batch)
        handle = _OvState(compiled.create_infer_request(), batch, var_ids)
        return self.reset_state(handle)

    def reset_state(self, handle):
        if not self.stateful:
            return super().reset_state(handle)
        handle.request.reset_state()  # zeros of the (static) variable shapes
        if any(float(s.get("init", 0.0)) != 0.0 for s in self.meta["states"]):
            self._write(handle, self.initial_arrays(handle.batch))
        return handle

    def _write(self, handle: _OvState, arrays: dict[str, np.ndarray]) -> None:
        import openvino as ov

        for v in handle.request.query_state():
            v.state = ov.Tensor(np.ascontiguousarray(arrays[handle.variables[v.name]]))

    def set_state(self, arrays: dict[str, np.ndarray]):
        if not self.stateful:
            return super().set_state(arrays)
        batch = self.check_state_arrays(arrays)
        compiled, var_ids = self._stateful_compiled(batch)
        handle = _OvState(compiled.create_infer_request(), batch, var_ids)
        self._write(handle, arrays)
        return handle

    def get_state(self, handle) -> dict[str, np.ndarray]:
        if not self.stateful:
            return super().get_state(handle)
        return {handle.variables[v.name]: np.array(v.state.data) for v in handle.request.query_state()}

    def step(self, x: np.ndarray, handle):
        if not self.stateful:
            return super().step(x, handle)
        try:
            res = handle.request.infer({"x": np.ascontiguousarray(x, np.float32)})
        except Exception as e:
            raise UserError(f"{self.model_path}: inference failed ({' '.join(str(e).split())[:300]})") from None
        lp = next(np.array(v) for o, v in res.items() if o.get_any_name() == "logprobs")
        return lp, handle
