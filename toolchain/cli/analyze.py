"""CLI: ``edgeasr analyze attention`` and ``edgeasr analyze band-mask`` (what an mha model's attention does)."""
from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from edgeasr.runtimes.errors import UserError

console = Console(stderr=True)


def _require(*modules: tuple[str, str]) -> None:
    """One line naming every missing module and the extras that install them (``(module, extra)`` pairs)."""
    import importlib.util

    missing = [(m, e) for m, e in modules if importlib.util.find_spec(m) is None]
    if missing:
        extras = ",".join(dict.fromkeys(e for _, e in missing))
        raise UserError(f"this command needs {', '.join(m for m, _ in missing)}: pip install 'edgeasr[{extras}]'")


def _common(f):
    f = click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
                     help="CPU threads torch may use.")(f)
    f = click.option("--max-utterances", type=int, help="Use this many test utterances, spread evenly "
                                                          "(default: all).")(f)
    f = click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Output directory.")(f)
    f = click.option("--mode", type=click.Choice(["strict", "stream"]), default="strict", show_default=True,
                     help="strict: every chunk encoded alone, positions relative to the chunk; stream: "
                          "left-context streaming (K/V cache), key offsets relative to the chunk start.")(f)
    f = click.option("--chunk-ms", required=True, type=float, help="Chunk size in ms (a multiple of 40 ms: one "
                                                                   "encoder frame of 4 fbank frames).")(f)
    f = click.option("--test", required=True, type=click.Path(path_type=Path), help="Test manifest (JSONL).")(f)
    return click.argument("model")(f)


@click.group()
def analyze():
    """What the attention of an mha model does: mean attention maps and diagonal-band masking."""


@analyze.command(name="attention")
@_common
def attention_cmd(model, test, chunk_ms, mode, out, max_utterances, threads):
    """Mean attention map of every layer of MODEL (RUN_DIR or shipped name, mixer mha), averaged over heads, chunks
    and utterances: attention_layer<i>.png, attention.png (grid), attention.html (self-contained) and
    attention.json (band_mass ±1..±8 diagonals and mean distance per layer)."""
    from edgeasr.runtimes.files import check_out_dir

    _require(("torch", "train"), ("matplotlib", "eval"))
    check_out_dir(out, [model, test])  # creates nothing: a run that fails writes nothing
    from edgeasr.evaluation.attention import Setup, attention_report, write_attention

    setup = Setup(model, test, chunk_ms, mode, max_utterances, threads)
    report, pngs, page = attention_report(setup, say=lambda s: console.print(s, highlight=False))
    paths = write_attention(out, report, pngs, page)
    for lay in report["layers"]:
        click.echo(f"layer {lay['layer']}: " + " ".join(f"±{k} {v:.3f}" for k, v in lay["band_mass"].items()) +
                   f"  mean distance {lay['mean_distance']:.2f}")
    click.echo(f"reports: {paths['json']} {paths['html']} {paths['attention.png']}")


@analyze.command(name="band-mask")
@_common
@click.option("--diagonals", default="3,5,7", show_default=True,
              help="Bands to try, comma-separated: k keeps keys within ±k encoder frames of the query (k >= 1).")
def band_mask_cmd(model, test, chunk_ms, mode, out, max_utterances, threads, diagonals):
    """WER of MODEL with its attention masked to a band of ±k diagonals (scores outside set to a large negative
    before the softmax, inference only) against the unmasked model, with 95 % bootstrap intervals and paired ΔWER:
    band_mask.json, band_mask.md, band_mask.html."""
    from edgeasr.runtimes.files import check_out_dir

    _require(("torch", "train"))
    check_out_dir(out, [model, test])
    from edgeasr.evaluation.attention import Setup, band_mask, parse_diagonals, write_band_mask

    ks = parse_diagonals(diagonals)
    setup = Setup(model, test, chunk_ms, mode, max_utterances, threads)
    report = band_mask(setup, ks, say=lambda s: console.print(s, highlight=False))
    paths = write_band_mask(out, report)
    click.echo(paths["md"].read_text())
    click.echo(f"reports: {paths['json']} {paths['md']} {paths['html']}")


COMMANDS = [analyze]
