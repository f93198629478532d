"""`edgeasr`: one CLI over the whole pipeline. Each command group lives in its own module."""
from __future__ import annotations

import sys

import click

from runtimes.errors import UserError


class _Group(click.Group):
    """Turns user errors into one line on stderr and exit 2 (tracebacks are for bugs only)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgeasr")
def main():
    """edgeasr: train, export, quantize and verify streaming ASR encoders."""


def _register():
    from toolchain import (cli_bench, cli_data, cli_export, cli_lint, cli_lm, cli_model, cli_parity, cli_quant,
                           cli_runtime)

    for module in (cli_data, cli_model, cli_lm, cli_export, cli_lint, cli_runtime, cli_quant, cli_bench, cli_parity):
        for cmd in module.COMMANDS:
            main.add_command(cmd)


_register()


if __name__ == "__main__":
    main()
