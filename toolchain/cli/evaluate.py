"""``edgeasr eval``: options -> ``edgeasr.evaluation.evaluate.evaluate_model``, then a table per manifest."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Column, Table

from edgeasr.evaluation.parity import ONNX_BACKENDS
from edgeasr.runtimes.errors import UserError


@click.command(name="eval")
@click.argument("model")
@click.option("--test", "manifests", required=True, multiple=True, type=click.Path(path_type=Path),
              help="Test manifest (repeat for several).")
@click.option("--direction", "directions",
              help="Comma-separated inference modes (default: l2r,alt,bi for a checkpoint, its own for an ONNX file); "
                   "a checkpoint also takes chunk-bi:<ms>ms and strict:<ms>ms (every chunk encoded alone).")
@click.option("--by", "by", help="Also break WER down by this manifest field (e.g. voice, speaker); 'engine' is "
                                 "derived from voice ('espeak-ng:en-us+f3' -> espeak-ng) when rows have no such field.")
@click.option("--skip-bad-rows", is_flag=True, help="Skip (and list) bad manifest rows instead of failing.")
@click.option("--lm", "lm_dir", type=click.Path(path_type=Path),
              help="Also decode with this word LM (edgeasr lm build): rows for decoder greedy and lm.")
@click.option("--backend", type=click.Choice(ONNX_BACKENDS), help="Backend for an ONNX model (default: ort).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Intra-op threads of an ONNX backend.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of tables.")
def evaluate(model, manifests, directions, by, skip_bad_rows, lm_dir, backend, threads, as_json):
    """WER/CER of MODEL per manifest x direction mode [x group] [x decoder], the WER with its 95 % bootstrap
    interval over utterances. MODEL: a RUN_DIR or shipped name (torch reference) or an exported MODEL.onnx, fp32 or
    int8, on an ONNX backend (its own direction mode)."""
    from edgeasr.evaluation.evaluate import evaluate_model
    from edgeasr.models.dirdrop import parse_mode, parse_strict
    from edgeasr.progress import progress_bar

    modes = [d.strip() for d in (directions or "").split(",") if d.strip()]
    if directions is not None and not modes:
        raise UserError("--direction: no mode given")
    for d in modes:
        try:
            if parse_strict(d) is None:
                parse_mode(d)
        except ValueError as e:
            raise UserError(f"--direction: {e}") from None
    with progress_bar(quiet=as_json) as bar:
        rows = evaluate_model(model, list(manifests), modes or None, by, lm_dir, backend, threads, skip_bad_rows,
                              bar=bar)
    word_lm = lm_dir is not None
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    # one table per manifest, the path as its title: a narrow terminal wraps the title and never cuts a group
    # name or number
    heads = ("direction", *([by] if by else []), *(["decoder"] if word_lm else []), "WER %", "95 % CI", "CER %",
             "utts")
    for m in dict.fromkeys(r["manifest"] for r in rows):
        t = Table(*[Column(h, no_wrap=True) for h in heads], title=m, title_justify="left")
        for r in (r for r in rows if r["manifest"] == m):
            t.add_row(r["direction"], *([r["group"]] if by else []), *([r["decoder"]] if word_lm else []),
                      f"{r['wer']:.2f}", f"{r['ci95'][0]:.1f}–{r['ci95'][1]:.1f}", f"{r['cer']:.2f}",
                      str(r["utterances"]))
        Console().print(t)


COMMANDS = [evaluate]
