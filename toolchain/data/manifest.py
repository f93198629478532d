"""NeMo-style JSONL manifests: one JSON object a line with ``audio_filepath``, ``text``, ``duration``.

``audio_filepath`` may be absolute or relative; relative paths are resolved against the manifest's own directory
(that is what `edgeasr data synth` and `data real` write, so a corpus folder can be moved as a whole).
Extra keys (e.g. ``voice``) are kept in ``Entry.extra``.

Validation: bad JSON, a missing key, a non-numeric or non-positive duration, a missing audio file or a text that
is empty after normalisation is a `UserError` naming the manifest and the row (``on_error="fail"``), or the row is
skipped with a warning (``on_error="skip"``; warnings are returned and printed to stderr, never silent).
Audio that exists but is unreadable is caught when it is loaded (`runtimes.audio.load_audio` names the file), or
up front with ``validate_audio=True`` (opens each header with soundfile.info).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeasr.runtimes.errors import UserError
from edgeasr.runtimes.vocab import normalize_text

REQUIRED = ("audio_filepath", "text", "duration")


@dataclass
class Entry:
    audio_filepath: str  # absolute, resolved
    text: str  # normalised
    duration: float  # seconds
    extra: dict = field(default_factory=dict)
    row: int = 0  # line number in its manifest (1-based), for messages about it


class ManifestResult(list):
    """A list of entries that also carries the warnings of skipped rows (``.warnings``)."""

    def __init__(self, entries=(), warnings=None):
        list.__init__(self, entries)
        self.warnings = list(warnings or [])


def read_manifest(path, on_error: str = "fail", validate_audio: bool = False, warn=None) -> ManifestResult:
    """Read and validate a manifest. Returns a list of `Entry` (with ``.warnings`` for skipped rows).

    ``warn``: callable for each warning when rows are skipped (default: print to stderr)."""
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"manifest not found: {p}")
    base = p.resolve().parent
    entries: list[Entry] = []
    warnings: list[str] = []
    try:
        # JSON lines end at "\n" only: str.splitlines() would also split at U+2028, U+0085, ... which are valid
        # inside a JSON string, rejecting good rows and numbering the rest wrongly
        lines = p.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise UserError(f"manifest {p} is not UTF-8 text: {e.reason} at byte {e.start}") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(_parse_row(line, base, validate_audio))
            entries[-1].row = n
        except _RowError as e:
            msg = f"{p} row {n}: {e}"
            if on_error == "fail":
                raise UserError(msg) from None
            warnings.append(msg)
    if warnings:
        (warn or _stderr)(f"skipped {len(warnings)} bad row(s) of {p}:")
        for w in warnings:
            (warn or _stderr)(f"  {w}")
    if not entries:
        raise UserError(f"manifest {p} has no usable rows" + (f" ({len(warnings)} skipped)" if warnings else ""))
    return ManifestResult(entries, warnings)


class _RowError(Exception):
    """One manifest row is unusable; the reader names the line and skips or fails as asked."""


def _parse_row(line: str, base: Path, validate_audio: bool) -> Entry:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise _RowError(f"bad JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
        raise _RowError("not a JSON object")
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise _RowError(f"missing key(s) {', '.join(missing)}")
    if not isinstance(row["audio_filepath"], str) or not row["audio_filepath"]:
        raise _RowError("audio_filepath is not a non-empty string")
    if not isinstance(row["text"], str):
        raise _RowError("text is not a string")
    try:
        duration = float(row["duration"])
    except (TypeError, ValueError):
        raise _RowError(f"duration {row['duration']!r} is not a number") from None
    if not duration > 0:
        raise _RowError(f"duration {duration} is not positive")
    text = normalize_text(row["text"])
    if not text:
        raise _RowError(f"text {row['text']!r} is empty after normalisation")
    audio = Path(row["audio_filepath"])
    audio = audio if audio.is_absolute() else base / audio
    if not audio.is_file():
        raise _RowError(f"audio file not found: {audio}")
    if validate_audio:
        import soundfile as sf

        try:
            info = sf.info(str(audio))
        except Exception as e:
            raise _RowError(f"unreadable audio {audio}: {' '.join(str(e).split())}") from None
        if info.frames <= 0:
            raise _RowError(f"audio file has no samples: {audio}")
    extra = {k: v for k, v in row.items() if k not in REQUIRED}
    return Entry(str(audio), text, duration, extra)


def write_manifest(path, entries, relative: bool = True) -> None:
    """Write entries atomically. With ``relative`` (default) audio paths inside the manifest's directory tree are
    written relative to it; others stay absolute."""
    p = Path(path)
    base = p.resolve().parent
    rows = []
    for e in entries:
        audio = Path(e.audio_filepath)
        if relative and audio.is_absolute():
            try:
                audio = audio.relative_to(base)
            except ValueError:
                pass
        rows.append({"audio_filepath": str(audio), "text": e.text, "duration": round(float(e.duration), 4),
                     **e.extra})
    write_manifest_rows(p, rows)


def write_manifest_rows(path, rows: list[dict]) -> None:
    """Atomic JSONL write of already-formed rows (temp file in the same directory, then os.replace)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)
