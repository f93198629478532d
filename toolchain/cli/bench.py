"""CLI: ``edgeasr bench`` (long-form cost vs length, chunk-size sweep) and ``edgeasr experiment dirdrop``."""
from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from edgeasr.runtimes.errors import UserError

console = Console(stderr=True)


@click.command()
@click.option("--model", "models", multiple=True, metavar="RUN_DIR|NAME",
              help="Checkpoint(s) to benchmark; default: random-init models at the shipping size (timing only).")
@click.option("--mixers", default="all", show_default=True, help="Comma-separated mixers, or all.")
@click.option("--lengths", default="10s,60s,10m,60m", show_default=True, help="Audio lengths (s, m, h units).")
@click.option("--backends", default="ort,openvino", show_default=True, help="Comma-separated: ort, openvino, torch...")
@click.option("--kinds", default="full,step", show_default=True, help="Graph kinds: full, step.")
@click.option("--out", "out", default="work/bench", show_default=True, type=click.Path(path_type=Path))
@click.option("--threads", default=1, show_default=True, type=int)
@click.option("--cap-s", default=120.0, show_default=True, type=float,
              help="Per-cell time cap: longer lengths are skipped once a length took longer (or would).")
@click.option("--mem-cap-mb", default=6000.0, show_default=True, type=float,
              help="A cell whose RSS passes this is killed; longer lengths predicted above it are skipped.")
@click.option("--chunk-frames", default=32, show_default=True, type=int, help="Step-graph chunk (fbank frames).")
@click.option("--direction", type=click.Choice(["bi", "l2r"]), default="bi", show_default=True,
              help="Direction mode of full graphs (bi: full attention for mha, both directions for RA).")
@click.option("--test", type=click.Path(path_type=Path), help="Test manifest: also run the chunk-size sweep.")
@click.option("--chunks-ms", default="160,320,640,1280", show_default=True, help="Sweep chunk sizes (ms).")
@click.option("--sweep-mixers", default="mha,none,deformable", show_default=True)
@click.option("--sweep-limit", default=100, show_default=True, type=int, help="Test utterances in the sweep.")
@click.option("--sweep-backends", default=None, help="Sweep backends (default: the first of --backends).")
@click.option("--no-longform", is_flag=True, help="Only the chunk-size sweep.")
def bench(models, mixers, lengths, backends, kinds, out, threads, cap_s, mem_cap_mb, chunk_frames, direction, test,
          chunks_ms, sweep_mixers, sweep_limit, sweep_backends, no_longform):
    """Cost vs audio length per mixer x graph kind x backend (time, MPS, peak RSS, fitted exponent), and the
    seed-001 chunk-size sweep (WER, RTF) with --test."""
    from edgeasr.models.mixers import mixer_names
    from edgeasr.runtimes.backends import NAMES
    from edgeasr.evaluation import bench as B

    mixer_list = B.parse_choices(mixers, mixer_names(), "mixer")
    length_list = B.parse_lengths(lengths)
    backend_list = B.parse_choices(backends, NAMES, "backend")
    kind_list = B.parse_choices(kinds, B.KINDS, "graph kind")
    sweep_mixer_list = B.parse_choices(sweep_mixers, mixer_names(), "mixer")
    chunk_list = B.parse_chunks_ms(chunks_ms)
    sweep_backend_list = B.parse_choices(sweep_backends, NAMES, "backend") if sweep_backends else None
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    if test is not None and not test.is_file():
        raise UserError(f"{test}: test manifest not found")
    if no_longform and test is None:
        raise UserError("--no-longform needs --test (the sweep is the only thing left to run)")
    report, paths = B.bench(list(models), mixer_list, length_list, backend_list, kind_list, out, threads, cap_s,
                            mem_cap_mb, chunk_frames, direction, test, chunk_list, sweep_mixer_list, sweep_limit,
                            sweep_backend_list, not no_longform, say=lambda s: console.print(s, highlight=False))
    click.echo(paths["md"].read_text())
    click.echo(f"reports: {paths['json']} {paths['md']} {paths['html']}")


@click.group()
def experiment():
    """Experiments from the seed papers on our data."""


@experiment.command(name="dirdrop")
@click.option("--model", "models", multiple=True, required=True, metavar="RUN_DIR|NAME",
              help="Bidirectional checkpoints (no DirDrop, DirDrop-R2L, DirDrop-Both); variant read from config.json.")
@click.option("--test", required=True, type=click.Path(path_type=Path), help="Test manifest.")
@click.option("--out", "out", default="work/experiment", show_default=True, type=click.Path(path_type=Path))
@click.option("--limit", default=100, show_default=True, type=int, help="Test utterances (spread evenly).")
@click.option("--threads", default=1, show_default=True, type=int)
def dirdrop_cmd(models, test, out, limit, threads):
    """Seed 000's DirDrop table: each model decoded l2r / alt / bi (torch reference, greedy CTC)."""
    from edgeasr.evaluation.experiment import dirdrop

    report, paths = dirdrop(list(models), test, out, limit, threads,
                            say=lambda s: console.print(s, highlight=False))
    click.echo(paths["md"].read_text())
    click.echo(f"reports: {paths['json']} {paths['md']}")


COMMANDS = [bench, experiment]
