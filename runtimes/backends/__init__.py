"""Backend registry. Entries are ``module:Class`` strings, imported only when asked for: listing backends or running
ONNX Runtime never imports OpenVINO, TensorRT or torch. ``torch`` (the reference) lives in ``toolchain`` because
it needs torch; the deployment path never asks for it.
"""
from __future__ import annotations

import importlib

from edgeasr.runtimes.errors import BackendUnavailable, UserError

REGISTRY: dict[str, str] = {
    "ort": "edgeasr.runtimes.backends.ort:OrtBackend",
    "openvino": "edgeasr.runtimes.backends.openvino:OpenVinoBackend",
    "tensorrt": "edgeasr.runtimes.backends.tensorrt:TensorRTBackend",
    "ort-cuda": "edgeasr.runtimes.backends.ort:OrtCudaBackend",
    "torch": "edgeasr.evaluation.torch_backend:TorchBackend",
}
EXTRAS = {"ort": "pip install onnxruntime", "openvino": "pip install 'edgeasr[openvino]'",
          "tensorrt": "pip install 'edgeasr[tensorrt]' on a machine with an NVIDIA GPU",
          "ort-cuda": "pip install onnxruntime-gpu on a machine with an NVIDIA GPU",
          "torch": "pip install 'edgeasr[train]'"}
NAMES = tuple(REGISTRY)


def backend_class(name: str):
    if name not in REGISTRY:
        raise UserError(f"unknown backend {name!r}; choose {', '.join(NAMES)}")
    module, cls = REGISTRY[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise BackendUnavailable(f"backend {name} unavailable ({e}): {EXTRAS[name]}") from None


def available(name: str) -> tuple[bool, str]:
    try:
        return backend_class(name).available()
    except BackendUnavailable as e:
        return False, str(e)
    except Exception as e:  # a broken install must not break listing the others
        return False, f"{type(e).__name__}: {' '.join(str(e).split())[:200]} ({EXTRAS[name]})"


def get_backend(name: str, model, **options):
    """An (inactive) backend for ``model``; BackendUnavailable naming the extra to install when it cannot run."""
    cls = backend_class(name)
    ok, why = cls.available()
    if not ok:
        raise BackendUnavailable(f"backend {name} unavailable: {why}" +
                                 ("" if "pip install" in why else f" ({EXTRAS[name]})"))
    return cls(model, **options)


def list_backends() -> list[dict]:
    return [{"name": n, "available": ok, "reason": why} for n in NAMES for ok, why in [available(n)]]
