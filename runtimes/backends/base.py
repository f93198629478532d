"""The one backend interface (Polygraphy's runner lifecycle): construct lazily -> ``activate()`` -> ``infer()`` ->
``deactivate()``, plus a streaming state API that every session drives the same way.

- ``available()`` (classmethod) -> ``(ok, reason)``: never raises, never loads a model.
- ``__init__`` only records the model path and options; nothing heavy happens until ``activate()``.
- ``infer(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]``: one call of the graph by ONNX tensor names.
- State API for step graphs (``graph_kind == "step"``): ``init_state(batch)`` -> an opaque handle that the backend
  may keep in its own buffers (ORT OrtValues, OpenVINO internal variables, TensorRT device memory);
  ``step(x, handle) -> (logprobs, handle)``; ``get_state(handle)`` / ``set_state(arrays)`` convert to and from
  numpy ``{state name: [B, *shape]}`` (how sessions stack and unstack concurrent streams on axis 0);
  ``reset_state(handle)`` starts a new utterance; ``release_state(handle)`` frees it.
  The base class implements the state API over ``infer`` with numpy states; backends override it to reuse buffers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeasr.runtimes.errors import BackendUnavailable, UserError
from edgeasr.runtimes.metadata import check_graph, read_metadata, state_io_names


class Backend:
    name = "base"
    extra = ""  # the pip extra that makes this backend available
    device = "cpu"

    def __init__(self, model, threads: int = 1, precision: str | None = None, **options):
        self.model_path = Path(model) if model is not None else None
        self.threads = max(1, int(threads))
        self.precision = precision
        self.options = options
        self._meta: dict | None = None
        self.active = False

    # --- availability / lifecycle ------------------------------------------------------------------------
    @classmethod
    def available(cls) -> tuple[bool, str]:
        return False, "abstract backend"

    @classmethod
    def require(cls) -> None:
        ok, why = cls.available()
        if not ok:
            raise BackendUnavailable(f"backend {cls.name} unavailable: {why}")

    @property
    def meta(self) -> dict:
        if self._meta is None:
            self._meta = read_metadata(self.model_path)
        return self._meta

    def activate(self) -> "Backend":
        if not self.active:
            self.require()
            self._activate()
            self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def __enter__(self):
        return self.activate()

    def __exit__(self, *exc):
        self.deactivate()

    def _activate(self) -> None:
        raise NotImplementedError

    def _deactivate(self) -> None:
        pass  # default: nothing held beyond what garbage collection frees (subclasses release sessions, requests)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    # --- metadata helpers ----------------------------------------------------------------------------------
    @property
    def state_names(self) -> list[tuple[str, str, str]]:
        """[(state name, graph input, graph output)] in graph order."""
        return [(s["name"], i, o) for s, (i, o) in zip(self.meta["states"], state_io_names(self.meta))]

    def initial_arrays(self, batch: int) -> dict[str, np.ndarray]:
        return {s["name"]: np.full((batch, *s["shape"]), s.get("init", 0.0), dtype=np.dtype(s.get("dtype", "float32")))
                for s in self.meta["states"]}

    def check_state_arrays(self, arrays: dict[str, np.ndarray]) -> int:
        """Batch size of a numpy state dict; UserError (one line) on a missing state or a wrong shape."""
        batch = None
        for s in self.meta["states"]:
            a = arrays.get(s["name"])
            if a is None:
                raise UserError(f"state {s['name']} missing")
            if tuple(a.shape[1:]) != tuple(s["shape"]) or a.ndim != len(s["shape"]) + 1:
                raise UserError(f"state {s['name']} has shape {list(a.shape)}, expected [batch, "
                                f"{', '.join(map(str, s['shape']))}] (edgeasr.states)")
            if batch is not None and a.shape[0] != batch:
                raise UserError(f"state {s['name']} has batch {a.shape[0]}, others {batch}")
            batch = a.shape[0]
        return batch or 0

    def check_graph_shapes(self, graph_inputs: dict[str, list], graph_outputs: dict[str, list] | None = None) -> None:
        """The metadata against the graph this backend loaded (``metadata.graph_problems``: vocabulary width,
        blank id, features, state shapes; symbolic dims pass): a one-line UserError naming the file."""
        def dims(shapes):
            return {k: [d if isinstance(d, int) else -1 for d in v] for k, v in shapes.items()}

        io = {"inputs": dims(graph_inputs), "outputs": None if graph_outputs is None else dims(graph_outputs)}
        check_graph(self.meta, io, str(self.model_path))

    # --- streaming state API (numpy default over infer) --------------------------------------------------
    def init_state(self, batch: int):
        return self.initial_arrays(batch)

    def set_state(self, arrays: dict[str, np.ndarray]):
        self.check_state_arrays(arrays)
        return {k: np.ascontiguousarray(v) for k, v in arrays.items()}

    def get_state(self, handle) -> dict[str, np.ndarray]:
        return {k: np.array(v) for k, v in handle.items()}

    def reset_state(self, handle):
        batch = next(iter(handle.values())).shape[0] if handle else 1
        return self.init_state(batch)

    def release_state(self, handle) -> None:
        pass  # explicit-state backends keep states as numpy arrays: nothing to free (stateful ones override)

    def step(self, x: np.ndarray, handle) -> tuple[np.ndarray, object]:
        feeds = {"x": np.ascontiguousarray(x, np.float32)}
        for name, iname, _ in self.state_names:
            feeds[iname] = handle[name]
        out = self.infer(feeds)
        return out["logprobs"], {name: out[oname] for name, _, oname in self.state_names}
