"""CLI command: parity (every model × backend × precision × mode against the torch fp32 reference, issue 6)."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from edgeasr.runtimes.errors import UserError

console = Console(stderr=True)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@click.command()
@click.option("--model", "models", multiple=True, required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Exported ONNX file (repeat: fp32 and int8, step and full). All must share one vocabulary.")
@click.option("--test", "test", required=True, type=click.Path(path_type=Path),
              help="Test manifest (JSONL: audio_filepath, text, duration).")
@click.option("--reference", help="Torch fp32 reference checkpoint (RUN_DIR or shipped name), or an fp32 MODEL.onnx "
                                  "run on ONNX Runtime (for installs without torch). Default: the checkpoint whose "
                                  "weights match the models' edgeasr.source_sha256.")
@click.option("--backends", default="all", show_default=True,
              help="Comma list of ort, openvino, tensorrt, ort-cuda, or all (missing ones are listed as skipped).")
@click.option("--modes", default="step,full", show_default=True, help="Graph kinds to run: step, full, chunk.")
@click.option("--out", "out", default="work/parity", show_default=True, type=click.Path(path_type=Path),
              help="Output directory for report.json, report.md, report.html.")
@click.option("--max-wer-delta", type=float, help="Fail (exit 1) when a cell's WER exceeds the reference's by more "
                                                   "than this (absolute: 0.01 = 1 point).")
@click.option("--max-err", type=float, help="Fail (exit 1) when a cell's max abs logprob (or final-state) error "
                                            "against the reference exceeds this.")
@click.option("--max-utterances", type=int, help="Use only the first N utterances of the test set.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Intra-op threads of every backend.")
@click.option("--peer/--no-peer", default=None,
              help="Also run pocketsphinx, an independent recognizer, as a yardstick (default: on when installed).")
@click.option("--bf16/--no-bf16", default=True, show_default=True,
              help="Also run fp32 models on OpenVINO bf16 when the CPU offers it (its own precision row).")
@click.option("--isolate/--in-process", default=True, show_default=True,
              help="Run each cell in a fresh process (honest per-cell peak RSS) or all in this one (faster).")
@click.option("--lm", "lm_dir", type=click.Path(path_type=Path),
              help="Also decode every cell with this word LM (edgeasr lm build): WER LM and ΔWER LM columns.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of the table.")
def parity(models, test, reference, backends, modes, out, max_wer_delta, max_err, max_utterances, threads, peer,
           bf16, isolate, lm_dir, as_json):
    """Parity report: WER/CER, ΔWER, agreement, logprob and state error, RTF, chunk latency, RSS, size and load
    time of every model × backend × precision × mode (a cell) against the torch fp32 reference, plus the
    pocketsphinx peer.
    Writes report.json (schema edgeasr-parity/1), report.md and a self-contained report.html."""
    import json

    from edgeasr.runtimes.files import check_out_dir
    from edgeasr.evaluation.parity import run_parity
    from edgeasr.evaluation.report_html import summary_table, write_reports
    from edgeasr.progress import progress_bar

    if not Path(test).is_file():
        raise UserError(f"test manifest not found: {test}")
    # before any cell runs: an unwritable --out (or one of the inputs) fails in a second, not after the run
    check_out_dir(out, [*models, test, reference, lm_dir])
    if lm_dir:
        from edgeasr.runtimes.lm_decoder import read_lm_info

        read_lm_info(lm_dir)  # likewise a wrong LM directory

    def log(msg):
        console.print(msg, highlight=False, markup=False)

    with progress_bar(quiet=as_json, console=console) as bar:
        report = run_parity(list(models), test, reference, _csv(backends), _csv(modes), max_wer_delta, max_err,
                            max_utterances, threads, peer, bf16, isolate, log, lm=lm_dir, bar=bar)
    paths = write_reports(report, out)
    if as_json:
        click.echo(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        click.echo(summary_table(report))
        for w in report["warnings"]:
            click.echo(f"warning: {w}", err=True)
        click.echo(f"\nreport: {paths['html']} ({paths['md'].name}, {paths['json'].name})")
    if report["failures"]:
        for f in report["failures"]:
            click.echo(f"FAIL {f}", err=True)
        sys.exit(1)


COMMANDS = [parity]
