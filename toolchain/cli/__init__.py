"""`edgeasr`: one CLI over the whole pipeline. Each command group lives in its own module."""
from __future__ import annotations

import signal
import sys
import threading

import click

from edgeasr.extras import missing_extra_error
from edgeasr.runtimes.errors import UserError


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like SIGINT's KeyboardInterrupt so the same cleanup runs (temp files beside --out,
    temporary directories, training's interrupt checkpoint) instead of the process vanishing mid-write."""


def _on_sigterm(signum, frame):
    raise Terminated()


class _Group(click.Group):
    """Turns user errors into one line on stderr and exit 2 (tracebacks are for bugs only)."""

    def invoke(self, ctx):
        main_thread = threading.current_thread() is threading.main_thread()  # where signal handlers live
        previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
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
        except Terminated:
            click.echo("terminated", err=True)
            sys.exit(143)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        finally:
            if main_thread:  # an embedding process (tests, CliRunner) gets its own handler back
                signal.signal(signal.SIGTERM, previous)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgeasr")
def main():
    """edgeasr: train, export, quantize and verify streaming ASR encoders."""


def _register():
    """Every command module, in help order. They import only click/rich at module level: the heavy libraries
    (torch, onnx, openvino) load inside the command that needs them, so the CLI starts on a device install."""
    from edgeasr.cli import (analyze, bench, data, evaluate, export, lint, lm, parity, pretrained, quantize, train,
                             transcribe)

    for module in (data, train, evaluate, pretrained, lm, export, lint, transcribe, quantize, bench, parity,
                   analyze):
        for cmd in module.COMMANDS:
            main.add_command(cmd)


_register()


if __name__ == "__main__":
    main()
