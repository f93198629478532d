"""Option spellings shared by the commands, and the old spellings they replace (accepted one release, with a
notice), so every command limits utterances, caps time, sets threads, writes output and JSON the same way."""
from __future__ import annotations

import click


def renamed(old: str, new: str, dest: str, type=int, note: str = ""):
    """A hidden option for the old spelling ``old`` of ``new``: still works, says it is deprecated (``note``:
    what else changed, e.g. the unit)."""
    return _deprecated(old, dest, f"use {new}{note}", type=type)


def deprecated_no_progress():
    """The old ``--no-progress`` (data synth, quantize): still honoured, but no longer needed."""
    return _deprecated("--no-progress", "no_progress", "the progress bar shows only when stderr is a terminal",
                       is_flag=True)


def _deprecated(old: str, dest: str, instead: str, **kw):
    def notice(ctx, param, value):
        if value not in (None, False):
            click.echo(f"notice: {old} is deprecated; {instead}", err=True)
        return value

    # the help is for the flag table in docs/cli.md (hidden options are not in --help)
    return click.option(old, dest, default=None, hidden=True, callback=notice, help=f"Deprecated: {instead}.", **kw)
