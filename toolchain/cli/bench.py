"""CLI: ``edgeasr bench`` (long-form cost vs length, chunk-size sweep) and the ``edgeasr experiment`` tables."""
from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from edgeasr.cli.options import renamed
from edgeasr.progress import progress_bar
from edgeasr.runtimes.errors import UserError

console = Console(stderr=True)


@click.command()
@click.option("--model", "models", multiple=True, metavar="RUN_DIR|NAME",
              help="Checkpoint(s) to benchmark; default: random-init models at the shipping size (timing only).")
@click.option("--mixers", default="all", show_default=True, help="Comma-separated mixers, or all.")
@click.option("--lengths", default="10s,60s,10m,60m", show_default=True,
              help="Audio lengths to time (units s, m, h).")
@click.option("--backends", default="ort,openvino", show_default=True, help="Comma-separated: ort, openvino, torch...")
@click.option("--kinds", default="full,step", show_default=True,
              help="Graph kinds: full (the whole audio in one call), step (streamed chunk by chunk).")
@click.option("--out", "out", default="work/bench", show_default=True, type=click.Path(path_type=Path),
              help="Output directory: bench.json, bench.md, bench.html (and the ONNX files timed).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="Intra-op threads of every backend.")
@click.option("--max-minutes-per-cell", default=2.0, show_default=True, type=float,
              help="Time cap of each mixer x graph kind x backend, in minutes: once one audio length takes longer "
                   "(or is predicted to), its longer lengths are skipped.")
@renamed("--cap-s", "--max-minutes-per-cell", "old_cap_s", type=float, note=" (minutes, not seconds)")
@click.option("--max-memory-mb", default=6000.0, show_default=True, type=float,
              help="Memory cap of each measurement: one whose peak RSS passes it is stopped, and longer lengths "
                   "predicted above it are skipped.")
@renamed("--mem-cap-mb", "--max-memory-mb", "old_mem_cap_mb", type=float)
@click.option("--chunk-frames", default=32, show_default=True, type=int,
              help="Chunk fed to step graphs, in feature frames (10 ms each).")
@click.option("--direction", type=click.Choice(["bi", "l2r"]), default="bi", show_default=True,
              help="Direction mode of full graphs (bi: full attention for mha, both directions for rwkv and "
                   "mamba2).")
@click.option("--test", type=click.Path(path_type=Path), help="Test manifest: also run the chunk-size sweep.")
@click.option("--chunks-ms", default="160,320,640,1280", show_default=True, help="Sweep chunk sizes (ms).")
@click.option("--sweep-mixers", default="mha,none,deformable", show_default=True,
              help="Mixers the chunk-size sweep (--test) runs.")
@click.option("--max-utterances", "sweep_limit", default=100, show_default=True, type=int,
              help="Test utterances in the chunk-size sweep.")
@renamed("--sweep-limit", "--max-utterances", "old_sweep_limit")
@click.option("--sweep-backends", default=None, help="Sweep backends (default: the first of --backends).")
@click.option("--no-longform", is_flag=True, help="Only the chunk-size sweep.")
@click.option("--json", "as_json", is_flag=True, help="Print bench.json instead of the tables.")
def bench(models, mixers, lengths, backends, kinds, out, threads, max_minutes_per_cell, old_cap_s, max_memory_mb,
          old_mem_cap_mb, chunk_frames, direction, test, chunks_ms, sweep_mixers, sweep_limit, old_sweep_limit,
          sweep_backends, no_longform, as_json):
    """Cost vs audio length per mixer x graph kind x backend (time, real-time factor, minutes of audio per second,
    peak RSS, fitted exponent), and with --test the chunk-size sweep (WER, real-time factor per chunk size)."""
    import json

    from edgeasr.models.mixers import mixer_names
    from edgeasr.runtimes.backends import NAMES
    from edgeasr.evaluation import bench as B

    sweep_limit = sweep_limit if old_sweep_limit is None else old_sweep_limit
    cap_s = max_minutes_per_cell * 60 if old_cap_s is None else old_cap_s
    mem_cap_mb = max_memory_mb if old_mem_cap_mb is None else old_mem_cap_mb
    mixer_list = B.parse_choices(mixers, mixer_names(), "mixer")
    length_list = B.parse_lengths(lengths)
    backend_list = B.parse_choices(backends, NAMES, "backend")
    kind_list = B.parse_choices(kinds, B.KINDS, "graph kind")
    sweep_mixer_list = B.parse_choices(sweep_mixers, mixer_names(), "mixer")
    chunk_list = B.parse_chunks_ms(chunks_ms)
    sweep_backend_list = B.parse_choices(sweep_backends, NAMES, "backend") if sweep_backends else None
    if test is not None and not test.is_file():
        raise UserError(f"{test}: test manifest not found")
    if no_longform and test is None:
        raise UserError("--no-longform needs --test (the sweep is the only thing left to run)")
    with progress_bar(quiet=as_json, console=console) as bar:
        report, paths = B.bench(list(models), mixer_list, length_list, backend_list, kind_list, out, threads, cap_s,
                                mem_cap_mb, chunk_frames, direction, test, chunk_list, sweep_mixer_list, sweep_limit,
                                sweep_backend_list, not no_longform, say=lambda s: console.print(s, highlight=False),
                                bar=bar)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(paths["md"].read_text())
    click.echo(f"reports: {paths['json']} {paths['md']} {paths['html']}")


@click.group()
def experiment():
    """Tables that compare trained models: Direction Dropout, streaming modes, strict-chunk sizes."""


@experiment.command(name="dirdrop")
@click.option("--model", "models", multiple=True, required=True, metavar="RUN_DIR|NAME",
              help="Bidirectional checkpoints (no DirDrop, DirDrop-R2L, DirDrop-Both); variant read from config.json.")
@click.option("--test", required=True, type=click.Path(path_type=Path), help="Test manifest.")
@click.option("--out", "out", default="work/experiment", show_default=True, type=click.Path(path_type=Path),
              help="Output directory (dirdrop.json, dirdrop.md).")
@click.option("--max-utterances", "limit", default=100, show_default=True, type=int,
              help="Test utterances (spread evenly over the manifest).")
@renamed("--limit", "--max-utterances", "old_limit")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="CPU threads torch may use.")
@click.option("--chunks-ms", default="", callback=lambda c, p, v: _chunk_specs(v),
              help="Also decode chunk-bi at these chunk sizes, e.g. 320,640 (ms); 320+320 adds a look-ahead.")
def dirdrop_cmd(models, test, out, limit, old_limit, threads, chunks_ms):
    """The Direction Dropout table: each model (trained without it, dropping R2L, or dropping either direction)
    decoded l2r / alt / bi with the torch reference and greedy CTC."""
    from edgeasr.evaluation.experiment import dirdrop

    limit = limit if old_limit is None else old_limit

    with progress_bar(console=console) as bar:
        report, paths = dirdrop(list(models), test, out, limit, threads,
                                say=lambda s: bar.console.print(s, highlight=False), chunks_ms=chunks_ms,
                                bar=bar)
    click.echo(paths["md"].read_text())
    click.echo(f"reports: {paths['json']} {paths['md']}")


def _ms_list(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected milliseconds like 160,320,640,1280, got {value!r}") from None


def _chunk_specs(value: str) -> list[str]:
    """``"320,480+160"`` -> ``["320", "480+160"]``: chunk sizes, each with an optional look-ahead (ms, 40 ms steps),
    checked by ``evaluation.streaming.chunk_modes``."""
    from edgeasr.evaluation.streaming import chunk_modes

    specs = [v.strip() for v in value.split(",") if v.strip()]
    try:
        chunk_modes(specs)
    except UserError as e:
        raise click.BadParameter(str(e).removeprefix("--chunks-ms: ")) from None
    return specs


@experiment.command(name="streaming")
@click.option("--model", "models", multiple=True, required=True, metavar="RUN_DIR|NAME",
              help="Checkpoints to compare (repeat); bidirectional ones get every chunk-bi size, alt and bi too.")
@click.option("--test", required=True, type=click.Path(path_type=Path), help="Held-out test manifest.")
@click.option("--real", type=click.Path(path_type=Path), help="A second test set, e.g. real recordings "
                                                             "(edgeasr data real).")
@click.option("--lm", "lm_dir", type=click.Path(path_type=Path), help="Also WER with this word LM (edgeasr lm build).")
@click.option("--chunks-ms", default="160,320,640,1280", show_default=True, callback=lambda c, p, v: _chunk_specs(v),
              help="chunk-bi chunk sizes in ms (multiples of 40); CHUNK+LOOKAHEAD (e.g. 480+160) adds a look-ahead.")
@click.option("--max-utterances", "limit", default=0, show_default=True, type=int,
              help="Utterances per test set (0: all).")
@renamed("--limit", "--max-utterances", "old_limit")
@click.option("--timing-utterances", default=20, show_default=True, type=int,
              help="Test utterances streamed on ONNX Runtime for RTF and first-partial latency.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="CPU threads torch may use for the WER decoding.")
@click.option("--out", "out", default="work/experiment", show_default=True, type=click.Path(path_type=Path),
              help="Output directory (streaming.json, streaming.md).")
def streaming_cmd(models, test, real, lm_dir, chunks_ms, limit, old_limit, timing_utterances, threads, out):
    """The streaming table: per model x mode (l2r, chunk-bi per chunk size, alt, bi) x test set, greedy WER
    (and with --lm), plus RTF and first-partial latency of each streamable mode's step graph on ORT, 1 thread."""
    from edgeasr.evaluation.streaming import streaming_table

    limit = limit if old_limit is None else old_limit

    with progress_bar(console=console) as bar:
        report, paths = streaming_table(list(models), test, real, lm_dir, chunks_ms, limit=limit,
                                        timing_utts=timing_utterances, threads=threads, out=out,
                                        say=lambda s: bar.console.print(s, highlight=False), bar=bar)
    click.echo(paths["md"].read_text())
    click.echo(f"reports: {paths['json']} {paths['md']}")


@experiment.command(name="chunk-sweep")
@click.option("--model", "models", multiple=True, metavar="RUN_DIR|NAME",
              help="Models to compare, the baseline first (default: mha-strict, none-strict, deformable-strict).")
@click.option("--test", required=True, type=click.Path(path_type=Path), help="Held-out test manifest.")
@click.option("--chunks-ms", default="160,320,640,1280", show_default=True, callback=lambda c, p, v: _ms_list(v),
              help="Chunk sizes in ms; each chunk is encoded alone.")
@click.option("--max-utterances", "limit", default=0, show_default=True, type=int,
              help="Test utterances, spread evenly over the manifest (0: all).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="Intra-op threads of ONNX Runtime.")
@click.option("--out", "out", default="work/experiment", show_default=True, type=click.Path(path_type=Path),
              help="Output directory (chunk_sweep.json, chunk_sweep.md, chunk_sweep.png).")
def chunk_sweep_cmd(models, test, chunks_ms, limit, threads, out):
    """Attention vs none vs deformable convolution in strict chunks: WER with 95 % intervals, paired ΔWER
    against the first model, parameters and encoder RTF per chunk size, on ONNX Runtime CPU."""
    from edgeasr.evaluation.chunk_sweep import chunk_sweep
    from edgeasr.extras import require

    require("torch", "onnx", "onnx_graphsurgeon")  # checkpoints are exported to ONNX before they run
    if not chunks_ms or min(chunks_ms) <= 0:
        raise UserError(f"--chunks-ms must list positive milliseconds, got {chunks_ms}")
    with progress_bar(console=console) as bar:
        report, paths = chunk_sweep(list(models), test, out, chunks_ms, limit, threads,
                                    say=lambda s: bar.console.print(s, highlight=False), bar=bar)
    click.echo(paths["md"].read_text())
    click.echo("reports: " + " ".join(str(p) for p in paths.values()))


COMMANDS = [bench, experiment]
