"""CLI command: quantize (fp32 ONNX export -> one int8 QDQ artifact for every backend, DESIGN.md §4)."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from edgeasr.cli.options import deprecated_no_progress
from edgeasr.runtimes.errors import UserError

console = Console(stderr=True)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--calib", "calib", required=True, type=click.Path(path_type=Path),
              help="Calibration manifest (JSONL: audio_filepath, text, duration).")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Output .int8.onnx file.")
@click.option("--method", type=click.Choice(["minmax", "percentile", "entropy"]), default="minmax",
              show_default=True,
              help="How activation ranges are set from the calibration samples.")
@click.option("--format", "fmt", type=click.Choice(["qdq", "dynamic"]), default="qdq", show_default=True,
              help="qdq: the static QDQ artifact every backend reads (ORT, OpenVINO, TensorRT). dynamic: CPU-only "
                   "(ORT, OpenVINO), int8 weights with activations quantized per call; the calibration still ranks "
                   "the nodes for --max-wer-drop.")
@click.option("--max-utterances", type=int, default=64, show_default=True, help="Calibration utterances used.")
@click.option("--max-samples", type=int, default=512, show_default=True,
              help="Calibration samples (step graphs: chunks with their carried states) used at most.")
@click.option("--max-wer-drop", type=float, default=None,
              help="Accuracy-aware mode: fall back the most sensitive nodes to fp32 until ΔWER (absolute, "
                   "0.005 = 0.5 points) on --dev is within this budget.")
@click.option("--dev", "dev", type=click.Path(path_type=Path), help="Dev manifest for --max-wer-drop.")
@click.option("--max-dev-utterances", type=int, default=100, show_default=True,
              help="Dev utterances the accuracy-aware fallback decodes.")
@click.option("--max-fallback", type=float, default=0.5, show_default=True,
              help="Largest fraction of the quantizable nodes that may fall back to fp32.")
@click.option("--keep-fp32", "keep_fp32", multiple=True, metavar="GLOB",
              help="Keep the nodes whose name matches GLOB in fp32 (repeatable; names as --all-nodes lists them), "
                   "e.g. --keep-fp32 '/conv*/Conv' --keep-fp32 '/out/MatMul' for the subsampling.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the quantization report (JSON) here.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Intra-op threads of ONNX Runtime.")
@deprecated_no_progress()
@click.option("--all-nodes", is_flag=True, help="Print every node's precision, SQNR and reason, not a summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def quantize(model, calib, out, method, fmt, max_utterances, max_samples, max_wer_drop, dev, max_dev_utterances,
             max_fallback, keep_fp32, report_path, threads, no_progress, all_nodes, as_json):
    """Quantize an exported fp32 MODEL.onnx to int8 (QDQ, S8S8, symmetric, per-channel) calibrated on real
    streaming: each chunk of the calibration audio is fed with the state the fp32 model actually carried into it."""
    from edgeasr.extras import require

    require("onnx")
    from edgeasr.calibration.int8 import quantize_model
    from edgeasr.calibration.report import format_report, write_report
    from edgeasr.data.manifest import read_manifest
    from edgeasr.progress import progress_bar
    from edgeasr.runtimes.files import claim_output
    from edgeasr.runtimes.metadata import read_metadata

    if max_utterances is not None and max_utterances < 1:
        raise UserError(f"--max-utterances must be >= 1, got {max_utterances}")
    if max_samples is not None and max_samples < 1:  # 0 once meant "unlimited" by accident
        raise UserError(f"--max-samples must be >= 1, got {max_samples}")
    if not 0.0 <= max_fallback <= 1.0:
        raise UserError(f"--max-fallback is a fraction of the quantizable nodes, 0 to 1, got {max_fallback:g}")
    if max_dev_utterances < 1:
        raise UserError(f"--max-dev-utterances must be >= 1, got {max_dev_utterances}")
    read_metadata(model)  # a foreign or inconsistent ONNX file: one line naming it, before any work
    inputs = [model, calib, dev]
    claim_output(out, inputs)
    if report_path is not None:
        claim_output(report_path, [*inputs, out])
    if dev is not None and max_wer_drop is None:
        raise UserError("--dev is only used with --max-wer-drop")
    if report_path is not None and not report_path.parent.is_dir():
        raise UserError(f"{report_path}: report directory {report_path.parent} does not exist")
    calib_rows = read_manifest(calib)
    dev_rows = None
    if dev is not None:
        dev_rows = [(e.audio_filepath, e.text) for e in read_manifest(dev)[:max_dev_utterances]]

    def log(msg):
        console.print(msg, highlight=False, markup=False)

    with progress_bar(quiet=as_json or bool(no_progress), console=console) as bar:
        task = bar.add_task("loading the model", total=None)

        def progress(stage, done, total, unit):
            if bar.tasks[0].description != stage:  # each stage counts in its own units from 0
                bar.reset(task, total=total, description=stage, unit=unit)
            bar.update(task, completed=done, total=total)

        report = quantize_model(model, [e.audio_filepath for e in calib_rows], out, method, max_utterances,
                                max_samples, dev_rows, max_wer_drop, max_fallback, threads, progress, log,
                                keep_fp32=list(keep_fp32), fmt=fmt)
    if report_path is not None:
        write_report(report, report_path)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_report(report, all_nodes))


COMMANDS = [quantize]
