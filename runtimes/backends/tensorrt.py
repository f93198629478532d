"""TensorRT (>= 10.12) GPU backend, written against the TensorRT 10 Python API and cuda-python's runtime bindings.

NOT RUN on the machines this project is developed on: TensorRT cannot be installed there (PyPI's full TensorRT
libraries are download stubs, DESIGN.md §5) and there is no NVIDIA GPU; ``available()`` says so and the tests skip.

- Build: ``trt.Builder`` -> network from ``trt.OnnxParser`` -> one optimization profile with ``T`` (fbank frames)
  and the batch dynamic and every state shape fixed except its batch axis -> ``build_serialized_network``.
  Q/DQ (int8) graphs are built as strongly typed networks (TRT 11 removed the INT8 flag: precision comes only
  from Q/DQ nodes). ``precision="fp16"`` sets the FP16 builder flag for fp32 graphs.
- Engine cache on disk (``$EDGEASR_TRT_CACHE`` or ``~/.cache/edgeasr/trt``), keyed by the model's sha256, the
  TensorRT version, the GPU name and compute capability, and the build options (profile, precision); written
  atomically, so a crashed build never leaves a half engine.
- Run: ``execute_async_v3`` with ``set_input_shape`` / ``set_tensor_address`` on one CUDA stream. States are
  ping-pong device buffers: chunk n reads A and writes B, chunk n+1 reads B and writes A. TensorRT gives wrong
  results when one buffer is bound as both a state input and its output, so that never happens.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from edgeasr.runtimes.backends.base import Backend
from edgeasr.runtimes.errors import UserError

MIN_VERSION = (10, 12)
NOT_INSTALLED = "tensorrt not installed: pip install edgeasr[tensorrt] on a machine with an NVIDIA GPU"


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def _check(result):
    """cuda-python calls return (err, *values): raise on error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(getattr(err, "value", err)) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else tuple(values) if values else None


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".")[:2] if p.isdigit())


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEASR_TRT_CACHE", Path.home() / ".cache" / "edgeasr" / "trt"))


class _DeviceBuffer:
    def __init__(self, nbytes: int):
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(_check(_cudart().cudaMalloc(self.nbytes)))

    def free(self) -> None:
        if self.ptr:
            _check(_cudart().cudaFree(self.ptr))
            self.ptr = 0


class _TrtState:
    def __init__(self, cur: list[_DeviceBuffer], nxt: list[_DeviceBuffer], batch: int):
        self.cur, self.nxt, self.batch = cur, nxt, batch


class TensorRTBackend(Backend):
    name = "tensorrt"
    extra = "tensorrt"
    device = "cuda"

    def __init__(self, model, threads: int = 1, precision: str | None = None, max_batch: int = 8,
                 max_frames: int | None = None, workspace_mb: int = 1024, **options):
        super().__init__(model, threads, precision, **options)
        self.max_batch = int(max_batch)
        self.max_frames = max_frames
        self.workspace_mb = int(workspace_mb)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import tensorrt as trt
        except ImportError:
            return False, NOT_INSTALLED
        except Exception as e:  # the PyPI stub raises while trying to download the real libraries
            return False, f"tensorrt import failed ({' '.join(str(e).split())[:160]}); {NOT_INSTALLED}"
        if _version_tuple(trt.__version__) < MIN_VERSION:
            return False, f"tensorrt {trt.__version__} is older than 10.12: pip install 'edgeasr[tensorrt]'"
        try:
            cudart = _cudart()
        except ImportError:
            return False, "cuda-python not installed (needed for device buffers): pip install cuda-python"
        try:
            n = _check(cudart.cudaGetDeviceCount())
        except Exception as e:
            return False, f"no usable CUDA device ({e})"
        if not n:
            return False, "no CUDA device"
        return True, f"tensorrt {trt.__version__} on {cls.gpu_name()}"

    @staticmethod
    def gpu_name() -> str:
        props = _check(_cudart().cudaGetDeviceProperties(0))
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return f"{name.strip(chr(0)).strip()} sm_{props.major}{props.minor}"

    # --- build / cache ---------------------------------------------------------------------------------------
    def _profile_shapes(self) -> dict[str, tuple[tuple, tuple, tuple]]:
        meta = self.meta
        F = int((meta.get("fbank") or {}).get("num_bins", 80))
        mult = int(meta.get("chunk_multiple", 4))
        chunk = int(meta.get("chunk_frames", 32))
        kind = meta["graph_kind"]
        max_t = self.max_frames or (max(4 * chunk, 64) if kind == "step" else 3000)
        max_t -= max_t % mult
        opt_t = chunk if kind != "full" else min(1000, max_t)
        B = self.max_batch
        shapes = {"x": ((1, mult, F), (1, opt_t, F), (B, max_t, F))}
        if kind == "full":
            shapes["x_lens"] = ((1,), (1,), (B,))
        for s, (iname, _) in zip(meta["states"], [(i, o) for _, i, o in self.state_names]):
            shp = tuple(s["shape"])
            shapes[iname] = ((1, *shp), (1, *shp), (B, *shp))
        return shapes

    def cache_key(self, model_sha256: str, trt_version: str, gpu: str) -> str:
        opts = json.dumps({"profile": self._profile_shapes(), "precision": self.precision or "fp32",
                           "workspace_mb": self.workspace_mb}, sort_keys=True)
        rest = hashlib.sha256(f"{trt_version}|{gpu}|{opts}".encode()).hexdigest()[:16]
        return f"{model_sha256[:32]}-{rest}"

    def _build(self, trt, logger, data: bytes) -> bytes:
        meta = self.meta
        builder = trt.Builder(logger)
        int8 = meta.get("quant_recipe", "none") not in ("none", "") or "int8" in str(meta.get("precision", ""))
        flags = 0
        if int8 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(data, str(self.model_path)):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise UserError(f"{self.model_path}: TensorRT ONNX parser failed: {' '.join(errs.split())[:400]}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mb << 20)
        if self.precision in ("fp16", "f16") and not int8:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for name, (mn, opt, mx) in self._profile_shapes().items():
            profile.set_shape(name, mn, opt, mx)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise UserError(f"{self.model_path}: TensorRT engine build failed (see the TensorRT log above)")
        return bytes(serialized)

    def _activate(self) -> None:
        import tensorrt as trt

        cudart = _cudart()
        meta = self.meta
        data = self.model_path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        gpu = self.gpu_name()
        key = self.cache_key(sha, trt.__version__, gpu)
        self.engine_path = cache_dir() / f"{key}.engine"
        logger = trt.Logger(trt.Logger.WARNING)
        if self.engine_path.is_file():
            blob = self.engine_path.read_bytes()
            self.cache_hit = True
        else:
            blob = self._build(trt, logger, data)
            self.engine_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.engine_path.parent, prefix=".engine.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, self.engine_path)
            (self.engine_path.with_suffix(".json")).write_text(json.dumps(
                {"model": str(self.model_path), "sha256": sha, "tensorrt": trt.__version__, "gpu": gpu,
                 "precision": self.precision or "fp32", "profile": self._profile_shapes()}, indent=2))
            self.cache_hit = False
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise UserError(f"{self.engine_path}: cannot deserialize the cached engine (delete it to rebuild)")
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        self.io = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in self.io if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in self.io if n not in self.inputs]
        self.np_dtype = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in self.io}
        self.check_graph_shapes({n: list(self.engine.get_tensor_shape(n)) for n in self.inputs})
        self._scratch: dict[str, _DeviceBuffer] = {}
        self._meta = meta

    def _deactivate(self) -> None:
        cudart = _cudart()
        for buf in self._scratch.values():
            buf.free()
        self._scratch.clear()
        if getattr(self, "stream", None) is not None:
            _check(cudart.cudaStreamDestroy(self.stream))
        self.context = self.engine = self.runtime = self.stream = None

    # --- memory helpers ------------------------------------------------------------------------------------
    def _scratch_buf(self, name: str, nbytes: int) -> _DeviceBuffer:
        buf = self._scratch.get(name)
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                buf.free()
            buf = self._scratch[name] = _DeviceBuffer(nbytes)
        return buf

    def _h2d(self, ptr: int, arr: np.ndarray) -> None:
        cudart = _cudart()
        _check(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def _d2h(self, arr: np.ndarray, ptr: int) -> None:
        cudart = _cudart()
        _check(cudart.cudaMemcpyAsync(arr.ctypes.data, ptr, arr.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    def _sync(self) -> None:
        _check(_cudart().cudaStreamSynchronize(self.stream))

    def _execute(self) -> None:
        if not self.context.execute_async_v3(int(self.stream)):
            raise UserError(f"{self.model_path}: TensorRT execution failed")

    # --- generic inference ---------------------------------------------------------------------------------
    def _check_profile(self, name: str, shape: tuple) -> None:
        mn, _, mx = self._profile_shapes().get(name, (None, None, None))
        if mn is not None and not all(a <= d <= b for a, d, b in zip(mn, shape, mx)):
            raise UserError(f"tensorrt: {name} shape {list(shape)} is outside the engine profile "
                            f"{list(mn)}..{list(mx)} (rebuild with larger max_batch / max_frames)")

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        host_in = {}
        for name in self.inputs:
            if name not in feeds:
                raise UserError(f"tensorrt: missing input {name}")
            a = np.ascontiguousarray(feeds[name], dtype=self.np_dtype[name])
            self._check_profile(name, a.shape)
            host_in[name] = a  # keep alive until the stream is synchronised
            buf = self._scratch_buf(name, a.nbytes)
            self._h2d(buf.ptr, a)
            self.context.set_input_shape(name, a.shape)
            self.context.set_tensor_address(name, buf.ptr)
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = np.empty(shape, self.np_dtype[name])
            buf = self._scratch_buf(name, outs[name].nbytes)
            self.context.set_tensor_address(name, buf.ptr)
        self._execute()
        for name in self.outputs:
            self._d2h(outs[name], self._scratch[name].ptr)
        self._sync()
        return outs

    # --- ping-pong state buffers ---------------------------------------------------------------------------
    def set_state(self, arrays: dict[str, np.ndarray]) -> _TrtState:
        batch = self.check_state_arrays(arrays)
        if batch > self.max_batch:
            raise UserError(f"tensorrt: {batch} streams exceed the engine's max batch {self.max_batch}")
        cur, nxt, keep = [], [], []
        for name, _, _ in self.state_names:
            a = np.ascontiguousarray(arrays[name], np.float32)
            keep.append(a)
            cur.append(_DeviceBuffer(a.nbytes))
            nxt.append(_DeviceBuffer(a.nbytes))
            self._h2d(cur[-1].ptr, a)
        self._sync()
        return _TrtState(cur, nxt, batch)

    def init_state(self, batch: int) -> _TrtState:
        return self.set_state(self.initial_arrays(batch))

    def reset_state(self, handle: _TrtState) -> _TrtState:
        init = self.initial_arrays(handle.batch)
        for (name, _, _), buf in zip(self.state_names, handle.cur):
            self._h2d(buf.ptr, init[name])
        self._sync()
        return handle

    def get_state(self, handle: _TrtState) -> dict[str, np.ndarray]:
        out = {}
        for (name, _, _), s, buf in zip(self.state_names, self.meta["states"], handle.cur):
            out[name] = np.empty((handle.batch, *s["shape"]), np.float32)
            self._d2h(out[name], buf.ptr)
        self._sync()
        return out

    def release_state(self, handle: _TrtState) -> None:
        for buf in handle.cur + handle.nxt:
            buf.free()

    def step(self, x: np.ndarray, handle: _TrtState):
        x = np.ascontiguousarray(x, np.float32)
        self._check_profile("x", x.shape)
        xb = self._scratch_buf("x", x.nbytes)
        self._h2d(xb.ptr, x)
        self.context.set_input_shape("x", x.shape)
        self.context.set_tensor_address("x", xb.ptr)
        for (_, iname, oname), s, vin, vout in zip(self.state_names, self.meta["states"], handle.cur, handle.nxt):
            self.context.set_input_shape(iname, (handle.batch, *s["shape"]))
            self.context.set_tensor_address(iname, vin.ptr)
            self.context.set_tensor_address(oname, vout.ptr)  # never the input buffer: ping-pong
        state_outputs = {o for _, _, o in self.state_names}
        lp = None
        for name in self.outputs:
            if name in state_outputs:
                continue
            shape = tuple(self.context.get_tensor_shape(name))
            buf = self._scratch_buf(name, int(np.prod(shape)) * self.np_dtype[name].itemsize)
            self.context.set_tensor_address(name, buf.ptr)
            if name == "logprobs":
                lp = np.empty(shape, self.np_dtype[name])
        self._execute()
        self._d2h(lp, self._scratch["logprobs"].ptr)
        self._sync()
        handle.cur, handle.nxt = handle.nxt, handle.cur
        return lp, handle
