"""Atomic file writes: a temp file beside the target, an optional check of what landed on disk, then a rename.
A failed write or check leaves nothing behind, so users never see a half-written artifact; the temp file of a run
killed outright (SIGKILL, power loss) is removed by the next write to the same place (``remove_stale_temps``).
``claim_output`` is the one check that no command writes over one of its own inputs."""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

STALE_SECONDS = 60  # a temp file this old whose owner is unknown belongs to no live write


def atomic_write(path, data: bytes, check: Callable[[str], None] | None = None) -> int:
    """Write ``data`` to ``path`` atomically; ``check(tmp_path)`` may raise to abort. Returns the byte count.
    OSError (unwritable directory, full disk) propagates for the caller to turn into its one-line error."""
    path = Path(path)
    remove_stale_temps(path)
    # the pid in the name tells a later run whether the writer is still alive
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
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


def remove_stale_temps(path) -> list[Path]:
    """Remove the ``.NAME.*.tmp`` temporaries (files, or an LM's build directory) that killed runs left beside
    ``path``: those whose writer's pid is gone, or, without a pid in the name, older than a minute. A concurrent
    live write is never touched."""
    path = Path(path)
    removed = []
    try:
        candidates = list(path.parent.glob(f".{_glob_escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        # ".NAME.<pid>.<random>.tmp", or ".NAME.<random>.tmp" from before pids were recorded; anything else
        # belongs to another name that starts like this one
        middle = re.fullmatch(r"(?:(\d+)\.)?([^.]+)", tmp.name[len(path.name) + 2:-len(".tmp")])
        if middle is None:
            continue
        try:
            if middle.group(1):
                stale = not _pid_alive(int(middle.group(1)))
            else:
                stale = time.time() - tmp.stat().st_mtime > STALE_SECONDS
            if stale:
                shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink()
                removed.append(tmp)
        except OSError:  # gone already (another run cleaned it) or not ours to remove
            continue
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def own_input_problem(out, inputs: Iterable, replaces_dir: bool = False) -> str | None:
    """Why writing ``out`` would destroy one of the command's own ``inputs`` (one line), or None.

    ``out`` is an input when it is the same file (``os.path.samefile``: symlinks and hardlinks included); with
    ``replaces_dir`` (``out`` is a directory the command replaces as a whole) also when an input lies inside it."""
    out = Path(out)
    for inp in inputs:
        if inp is None:
            continue
        inp = Path(inp)
        try:
            if out.resolve() == inp.resolve() or out.exists() and inp.exists() and os.path.samefile(out, inp):
                return f"{out}: is one of this command's inputs ({inp}); choose another --out"
            if replaces_dir and out.is_dir() and inp.exists() and \
                    inp.resolve().is_relative_to(out.resolve()):
                return f"{out}: holds {inp}, one of this command's inputs; choose another --out"
        except OSError:
            continue
    return None


def claim_output(out, inputs: Iterable, replaces_dir: bool = False) -> Path:
    """Check ``out`` before any work: a one-line UserError when it is one of ``inputs`` (``own_input_problem``);
    replacing an unrelated existing file or directory is allowed, with a ``notice:`` line on stderr."""
    from edgeasr.runtimes.errors import UserError

    problem = own_input_problem(out, inputs, replaces_dir)
    if problem:
        raise UserError(problem)
    out = Path(out)
    if out.is_file() or (replaces_dir and out.is_dir() and any(out.iterdir())):
        print(f"notice: replacing existing {out}", file=sys.stderr)
    return out


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


def check_out_dir(out, inputs: Iterable = ()) -> Path:
    """``out`` as a Path, or a one-line UserError naming why it cannot receive results (creates nothing): also
    when it is one of the command's ``inputs`` (a model directory, an LM directory, a manifest)."""
    from edgeasr.runtimes.errors import UserError

    problem = out_dir_problem(out) or own_input_problem(out, inputs)
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


def sha256_file(path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (a checkpoint's identity in ONNX metadata and model cards)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
