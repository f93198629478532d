"""`edgeasr lm`: word n-gram LMs for beam-search decoding (`build`, `tune`); `--lm DIR` on eval/transcribe uses them."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from edgeasr.runtimes.errors import UserError
from edgeasr.evaluation.parity import ONNX_BACKENDS

console = Console(stderr=True)


@click.group("lm")
def lm():
    """Word n-gram LMs for CTC beam search: `build` one from text, `tune` its weights on a dev set."""


@lm.command("build")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory: the LM that --lm takes.")
@click.option("--text", "texts", multiple=True, type=click.Path(path_type=Path),
              help="Plain-text file, one sentence per line (repeatable). Default: the embedded KJV sentences.")
@click.option("--exclude", "excludes", multiple=True, type=click.Path(path_type=Path),
              help="Manifest whose sentences are kept out of the LM (repeatable): the sets you will score on.")
@click.option("--order", default=4, show_default=True, type=click.IntRange(1, 6),
              help="n-gram order (4 scored 0.2-0.6 points below 3 on the held-out sets; 5 no better).")
def build(out: Path, texts: tuple[Path, ...], excludes: tuple[Path, ...], order: int):
    """Estimate an n-gram LM (IRSTLM, improved Kneser-Ney; Witten-Bell on a text too small for it) into an LM
    directory for `--lm`."""
    from edgeasr.evaluation.lm import build_lm, manifest_texts
    from edgeasr.runtimes.files import claim_output

    claim_output(out, [*texts, *excludes], replaces_dir=True)  # the LM directory is replaced as a whole

    if texts:
        sentences, sources = [], []
        for t in texts:
            if not t.is_file():
                raise UserError(f"{t}: text file not found")
            sentences += t.read_text(encoding="utf-8", errors="replace").splitlines()
            sources.append(str(t))
    else:
        from edgeasr.data.textsource import sentences as embedded

        sentences, sources = embedded(), ["embedded KJV sentences (Debian bible-kjv-text)"]
        if not excludes:
            console.print("[yellow]notice[/]: the embedded text holds the synth corpus's dev/test sentences too; "
                          "pass --exclude MANIFEST for the sets you will score on")
    exclude = set().union(*(manifest_texts(m) for m in excludes)) if excludes else set()
    info = build_lm(sentences, out, order=order, exclude=exclude,
                    sources=sources + [f"minus sentences of {m}" for m in excludes])
    console.print(f"LM {out}: {info['order']}-gram over {info['sentences']} sentences, {info['words']} words, "
                  f"{info['excluded_sentences']} held-out sentences excluded")
    click.echo(json.dumps({k: info[k] for k in ("order", "sentences", "words", "tokens", "excluded_sentences")}))


@lm.command("tune")
@click.argument("lm_dir", type=click.Path(path_type=Path))
@click.option("--model", required=True,
              help="Whose log-probs to decode: RUN_DIR or shipped name (torch), or an exported MODEL.onnx.")
@click.option("--dev", "dev_manifest", required=True, type=click.Path(path_type=Path),
              help="Dev manifest the weights are tuned on.")
@click.option("--direction", help="Inference mode: l2r, bi, alt or chunk-bi:<ms>ms (default: the model's; an ONNX "
                                  "file decodes only in the mode it was exported in).")
@click.option("--backend", type=click.Choice(ONNX_BACKENDS),
              help="Backend for an ONNX model (default: ort).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="Intra-op threads.")
@click.option("--beam-size", type=click.IntRange(min=1),
              help="Beam width to tune at and record (default: the LM's, 512): smaller decodes faster, less well.")
@click.option("--skip-bad-rows", is_flag=True, help="Skip (and list) bad manifest rows instead of failing.")
def tune(lm_dir: Path, model: str, dev_manifest: Path, direction: str | None, backend: str | None, threads: int,
         beam_size: int | None, skip_bad_rows: bool):
    """Grid-search the LM weight and word score on a dev set; the best pair is saved in LM_DIR/lm.json.

    Tune on what you deploy: given an exported (or int8) MODEL.onnx, the grid decodes that graph's log-probs."""
    from edgeasr.extras import require

    require("flashlight")
    from edgeasr.runtimes.lm_decoder import read_lm_info
    from edgeasr.runtimes.vocab import ctc_greedy
    from edgeasr.evaluation.lm import TUNE_LM_WEIGHTS, TUNE_WORD_SCORES, grid_edges, save_weights, tune_weights
    from edgeasr.data.manifest import read_manifest
    from edgeasr.evaluation.metrics import wer
    from edgeasr.evaluation.model_logprobs import ModelLogprobs
    from edgeasr.progress import progress_bar

    read_lm_info(lm_dir)  # a wrong directory fails before the model runs
    with progress_bar(console=console) as bar:
        task = bar.add_task("features", total=None, unit="utts")
        with ModelLogprobs(model, backend, threads, direction) as source:
            entries = read_manifest(dev_manifest, on_error="skip" if skip_bad_rows else "fail")
            bar.update(task, total=len(entries))
            utts = source.utterances(entries, progress=lambda n: bar.advance(task, n))
            bar.reset(task, total=len(utts), description="log-probs")
            logprobs, mode = source.logprobs(utts, progress=lambda n: bar.advance(task, n)), source.default_mode
            vocab, blank_id = source.vocab, source.blank_id
        refs = [u.text for u in utts]
        greedy = 100 * wer(refs, [ctc_greedy(lp, blank_id, vocab) for lp in logprobs])
        grid = len(TUNE_LM_WEIGHTS) * len(TUNE_WORD_SCORES)  # each point decodes every utterance with the LM
        bar.reset(task, total=grid * len(utts), description=f"LM weight grid ({grid} settings)")
        best, table = tune_weights(lm_dir, logprobs, refs, vocab, blank_id, beam_size=beam_size,
                                   progress=lambda: bar.advance(task))
    save_weights(lm_dir, best, f"{dev_manifest} ({model}, {mode})", greedy)
    t = Table("lm_weight", "word_score", "WER %")
    for r in table:
        mark = "bold green" if r is best else None
        t.add_row(f"{r['lm_weight']:g}", f"{r['word_score']:g}", f"{r['wer']:.2f}", style=mark)
    console.print(t)
    console.print(f"greedy {greedy:.2f} % -> LM {best['wer']:.2f} % WER at lm_weight {best['lm_weight']:g}, "
                  f"word_score {best['word_score']:g}, beam {best['beam_size']}; saved in {Path(lm_dir) / 'lm.json'}")
    edges = grid_edges(best)
    if edges:
        console.print(f"note: on the grid's edge: {', '.join(edges)}; the optimum may lie beyond it")
    click.echo(json.dumps({"greedy_wer": round(greedy, 2), **best}))


COMMANDS = [lm]
