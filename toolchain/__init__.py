"""edgeasr: streaming ASR encoders from training to verified on-device deployment.

The stable API an application embeds is the runtime one, importable without torch:

    import edgeasr
    rec = edgeasr.Recognizer("model.step.onnx")            # backend="ort" | "openvino" | "tensorrt" | "ort-cuda"
    s = rec.create_stream()
    s.accept_waveform(16000, samples)                       # -> new partial text or None
    print(s.finish().text)

Stages of the toolchain live in sub-packages: ``edgeasr.data`` (corpora), ``edgeasr.training``,
``edgeasr.exporters``, ``edgeasr.calibration`` (int8), ``edgeasr.evaluation`` (parity, bench, reports),
``edgeasr.runtimes`` (what a device runs), ``edgeasr.cli`` (the ``edgeasr`` command).
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from edgeasr.runtimes.errors import BackendUnavailable, UserError
from edgeasr.runtimes.metadata import read_metadata
from edgeasr.runtimes.recognizer import EndpointRules, Recognizer, RecognizerStream, Result

try:
    __version__ = version("edgeasr")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Recognizer", "RecognizerStream", "Result", "EndpointRules", "read_metadata", "UserError",
           "BackendUnavailable", "__version__"]
