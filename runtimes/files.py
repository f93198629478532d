"""Atomic file writes: a temp file beside the target, an optional check of what landed on disk, then a rename.
A failed write or check leaves nothing behind, so users never see a half-written artifact."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path, data: bytes, check: Callable[[str], None] | None = None) -> int:
    """Write ``data`` to ``path`` atomically; ``check(tmp_path)`` may raise to abort. Returns the byte count.
    OSError (unwritable directory, full disk) propagates for the caller to turn into its one-line error."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.chmod(tmp, _default_mode())  # mkstemp makes 0600; artifacts get the usual umask permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(data)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def out_dir_problem(out) -> str | None:
    """Why directory ``out`` cannot receive reports (one line), or None. Creates nothing: a run that fails
    later (bad manifest, missing model) must not leave an empty report directory behind."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            return f"{out}: exists and is not a directory"
        return None if os.access(out, os.W_OK) else f"{out}: cannot write there (directory is not writable)"
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{out}: cannot create output directory ({ancestor} is not a directory)"
    if not os.access(ancestor, os.W_OK):
        return f"{out}: cannot create output directory ({ancestor} is not writable)"
    return None


def check_out_dir(out) -> Path:
    """``out`` as a Path, or a one-line UserError naming why it cannot receive results (creates nothing)."""
    from edgeasr.runtimes.errors import UserError

    problem = out_dir_problem(out)
    if problem:
        raise UserError(f"--out {problem}")
    return Path(out)


def write_report_files(out, stem: str, texts: dict[str, str]) -> dict[str, Path]:
    """Create directory ``out`` if needed and write ``{ext: text}`` as ``out/stem.ext``, each atomically;
    returns ``{ext: path}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for ext, text in texts.items():
        paths[ext] = out / f"{stem}.{ext}"
        atomic_write(paths[ext], text.encode("utf-8"))
    return paths


def output_path_problem(out) -> str | None:
    """Why ``out`` cannot receive an artifact (one line), or None; checked before any expensive work."""
    out = Path(out)
    if out.is_dir():
        return f"{out}: is a directory, not an output file"
    if not out.parent.is_dir():
        return f"{out}: output directory {out.parent} does not exist"
    if not os.access(out.parent, os.W_OK):
        return f"{out}: output directory is not writable"
    return None
