"""`edgeasr`: one CLI over the whole pipeline. Each command group lives in its own module."""
from __future__ import annotations

import sys

import click

from edgeasr.extras import missing_extra_error
from edgeasr.runtimes.errors import UserError


class _Group(click.Group):
    """Turns user errors into one line on stderr and exit 2 (tracebacks are for bugs only)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except ModuleNotFoundError as e:
            err = missing_extra_error(e)
            if err is None:
                raise
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgeasr")
def main():
    """edgeasr: train, export, quantize and verify streaming ASR encoders."""


def _register():
    from edgeasr.cli import bench as cli_bench
    from edgeasr.cli import data as cli_data
    from edgeasr.cli import export as cli_export
    from edgeasr.cli import lint as cli_lint
    from edgeasr.cli import lm as cli_lm
    from edgeasr.cli import model as cli_model
    from edgeasr.cli import parity as cli_parity
    from edgeasr.cli import quantize as cli_quant
    from edgeasr.cli import transcribe as cli_runtime

    for module in (cli_data, cli_model, cli_lm, cli_export, cli_lint, cli_runtime, cli_quant, cli_bench, cli_parity):
        for cmd in module.COMMANDS:
            main.add_command(cmd)


_register()


if __name__ == "__main__":
    main()
