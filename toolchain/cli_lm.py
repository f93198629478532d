"""`edgeasr lm`: word n-gram LMs for beam-search decoding (`build`, `tune`); `--lm DIR` on eval/transcribe uses them."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from runtimes.errors import UserError
from toolchain.parity import ONNX_BACKENDS

console = Console(stderr=True)


@click.group("lm")
def lm():
    """Word n-gram LMs for CTC beam search: `build` one from text, `tune` its weights on a dev set."""


@lm.command("build")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="LM directory to write.")
@click.option("--text", "texts", multiple=True, type=click.Path(path_type=Path),
              help="Plain-text file, one sentence per line (repeatable). Default: the embedded KJV sentences.")
@click.option("--exclude", "excludes", multiple=True, type=click.Path(path_type=Path),
              help="Manifest whose sentences are kept out of the LM (repeatable): the sets you will score on.")
@click.option("--order", default=3, show_default=True, type=click.IntRange(1, 6), help="n-gram order.")
def build(out: Path, texts: tuple[Path, ...], excludes: tuple[Path, ...], order: int):
    """Estimate an n-gram LM (IRSTLM, improved Kneser-Ney) into an LM directory for `--lm`."""
    from toolchain.lm import build_lm, manifest_texts

    if texts:
        sentences, sources = [], []
        for t in texts:
            if not t.is_file():
                raise UserError(f"{t}: text file not found")
            sentences += t.read_text(encoding="utf-8", errors="replace").splitlines()
            sources.append(str(t))
    else:
        from toolchain.textsource import sentences as embedded

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
@click.option("--dev", "dev_manifest", required=True, type=click.Path(path_type=Path), help="Dev manifest.")
@click.option("--direction", type=click.Choice(["l2r", "bi", "alt"]),
              help="Inference mode of a checkpoint (default: the model's); an ONNX file carries its own.")
@click.option("--backend", type=click.Choice(ONNX_BACKENDS),
              help="Backend for an ONNX model (default: ort).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="Intra-op threads.")
@click.option("--skip-bad-rows", is_flag=True, help="Skip (and list) bad manifest rows instead of failing.")
def tune(lm_dir: Path, model: str, dev_manifest: Path, direction: str | None, backend: str | None, threads: int,
         skip_bad_rows: bool):
    """Grid-search the LM weight and word score on a dev set; the best pair is saved in LM_DIR/lm.json.

    Tune on what you deploy: given an exported (or int8) MODEL.onnx, the grid decodes that graph's log-probs."""
    from runtimes.lm_decoder import read_lm_info
    from runtimes.vocab import ctc_greedy
    from toolchain.cli_runtime import is_onnx
    from toolchain.lm import TUNE_LM_WEIGHTS, TUNE_WORD_SCORES, save_weights, tune_weights
    from toolchain.manifest import read_manifest
    from toolchain.metrics import wer

    read_lm_info(lm_dir)  # a wrong directory fails before the model runs
    onnx = is_onnx(model)
    if onnx and direction:
        raise UserError("--direction applies to checkpoints (torch); an ONNX file carries its direction mode")
    if backend and not onnx:
        raise UserError(f"--backend is for ONNX models; {model} is a checkpoint (it runs on torch)")
    entries = read_manifest(dev_manifest, on_error="skip" if skip_bad_rows else "fail")
    if onnx:
        logprobs, vocab, blank_id, mode = onnx_logprobs(model, entries, backend, threads)
    else:
        logprobs, vocab, blank_id, mode = checkpoint_logprobs(model, entries, direction)
    refs = [e.text for e in entries]
    greedy = 100 * wer(refs, [ctc_greedy(lp, blank_id, vocab) for lp in logprobs])
    with click.progressbar(length=len(TUNE_LM_WEIGHTS) * len(TUNE_WORD_SCORES), label="grid",
                           file=click.get_text_stream("stderr")) as bar:
        best, table = tune_weights(lm_dir, logprobs, refs, vocab, blank_id, progress=lambda: bar.update(1))
    save_weights(lm_dir, best, f"{dev_manifest} ({model}, {mode})", greedy)
    t = Table("lm_weight", "word_score", "WER %")
    for r in table:
        mark = "bold green" if r is best else None
        t.add_row(f"{r['lm_weight']:g}", f"{r['word_score']:g}", f"{r['wer']:.2f}", style=mark)
    console.print(t)
    console.print(f"greedy {greedy:.2f} % -> LM {best['wer']:.2f} % WER at lm_weight {best['lm_weight']:g}, "
                  f"word_score {best['word_score']:g}; saved in {Path(lm_dir) / 'lm.json'}")
    click.echo(json.dumps({"greedy_wer": round(greedy, 2), **best}))


def checkpoint_logprobs(model: str, entries, direction: str | None):
    """Per-utterance log-probs of a checkpoint (torch reference), with its vocabulary and direction mode."""
    from runtimes.features import FbankOptions
    from runtimes.vocab import BLANK_ID, VOCAB
    from toolchain.cli_model import load_model
    from toolchain.dataset import load_utterances
    from toolchain.train import utterance_logprobs

    net, config = load_model(model, direction)
    utts = load_utterances(entries, FbankOptions.from_dict(config["features"]))
    return utterance_logprobs(net, utts, "cpu"), VOCAB, BLANK_ID, net.direction


def onnx_logprobs(model: str, entries, backend: str | None, threads: int, batch: int = 16):
    """Per-utterance log-probs of an ONNX export on a runtime backend (features from its metadata's fbank
    options), with the vocabulary and direction mode its metadata declares."""
    from runtimes.audio import load_audio
    from runtimes.session import OfflineSession
    from toolchain.cli_runtime import open_backend

    b = open_backend(model, backend or "ort", stream=False, threads=threads, precision=None)
    try:
        session = OfflineSession(b)
        sr = int(b.meta["sample_rate"])
        feats = [session.features(load_audio(str(e.audio_filepath), sr)[0]) for e in entries]
        order = sorted(range(len(feats)), key=lambda i: len(feats[i]))  # similar lengths batch with little padding
        out: list = [None] * len(feats)
        for k in range(0, len(order), batch):
            idx = order[k:k + batch]
            for i, lp in zip(idx, session.logprobs_batch([feats[i] for i in idx])):
                out[i] = lp
        return out, b.meta["vocab"], int(b.meta["blank_id"]), b.meta.get("direction", "?")
    finally:
        b.deactivate()


COMMANDS = [lm]
