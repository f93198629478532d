"""Option spellings shared by the commands, and the old spellings they replace (accepted one release, with a
notice), so every command limits utterances, sets threads and writes JSON the same way."""
from __future__ import annotations

import click

MAX_UTTERANCES = "--max-utterances"


def renamed(old: str, new: str, dest: str, type=int):
    """A hidden option for the old spelling ``old`` of ``new``: still works, says it is deprecated."""
    def notice(ctx, param, value):
        if value is not None:
            click.echo(f"notice: {old} is deprecated; use {new}", err=True)
        return value

    return click.option(old, dest, type=type, default=None, hidden=True, callback=notice)
