"""CLI commands: lint-trt (static TensorRT-readiness check, no TensorRT needed)."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeasr.runtimes.errors import UserError


@click.command("lint-trt")
@click.argument("onnx_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON instead of a table.")
@click.option("--trt-version", default=None,
              help="TensorRT release the engine will be built with (default: the op table's baseline).")
def lint_trt(onnx_file: Path, as_json: bool, trt_version: str | None):
    """Check FILE.onnx for TensorRT readiness without TensorRT: ops and attributes against the ONNX-TensorRT
    parser's support table, dtypes (int64/float64/string), Q/DQ zero points, scales and per-channel axes, states
    kept fp32. Exit 1 when there are errors (warnings alone exit 0)."""
    from edgeasr.extras import require

    require("onnx")
    from edgeasr.exporters.trt_lint import load_op_table, lint_model, summarize

    ctx = click.get_current_context()
    try:
        problems = lint_model(onnx_file, trt_version=trt_version)
    except UserError as e:  # also when invoked outside the edgeasr group (tests, embedding)
        click.echo(f"error: {e}", err=True)
        ctx.exit(2)
    table = load_op_table()
    target = trt_version or table["baseline_trt_version"]
    errors, warnings = summarize(problems)
    data_desc = (f"op data: ONNX-TensorRT parser, TensorRT {table['trt_version']} "
                 f"(docs/operators.md); target TensorRT {target}")
    if as_json:
        click.echo(json.dumps({"file": str(onnx_file), "trt_version": table["trt_version"],
                               "target_trt_version": target, "errors": errors, "warnings": warnings,
                               "problems": [p.to_dict() for p in problems]}, indent=2))
    else:
        console = Console(width=max(Console().width, 120))
        if problems:
            t = Table(title=f"TensorRT readiness: {onnx_file.name}")
            t.add_column("severity", no_wrap=True)
            t.add_column("node", no_wrap=True, overflow="fold")
            t.add_column("op", no_wrap=True)
            t.add_column("problem")
            for p in problems:
                style = "red" if p.severity == "error" else "yellow"
                t.add_row(f"[{style}]{p.severity}[/{style}]", escape(p.node), escape(p.op_type), escape(p.message))
            console.print(t)
        verdict = "FAIL" if errors else "OK"
        console.print(f"{verdict}: {errors} error(s), {warnings} warning(s) in {onnx_file} ({data_desc})",
                      markup=False, highlight=False, soft_wrap=True)
    ctx.exit(1 if errors else 0)


COMMANDS = [lint_trt]
