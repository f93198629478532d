"""``edgeasr experiment streaming``: what each inference mode of a model costs and buys in a streaming deployment.

Per model x mode (``l2r``; ``chunk-bi`` at each chunk size, with a look-ahead where one is given; and the offline
references ``alt`` and ``bi``) x test set: greedy WER, WER with a word LM when one is given (both decoded from the
torch reference's log-probs, which the fp32 exports reproduce), and for the streamable modes the cost on the device
path: the step graph exported in that mode, run by ``edgeasr.Recognizer`` on ONNX Runtime with one thread over the
first ``timing_utts`` test utterances fed as a live source would (one chunk of audio at a time): real-time factor
and first-partial latency (audio time until the first partial text, plus the compute it waited for). ``l2r`` runs at
``l2r_chunk_ms``. Every WER has its 95 % bootstrap interval over utterances (``ci95``, same layout as ``wer``;
``edgeasr.evaluation.bootstrap``).
"""
from __future__ import annotations

import datetime as _dt
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeasr.models.dirdrop import parse_lookahead, parse_mode
from edgeasr.runtimes.errors import UserError

SCHEMA = "edgeasr.experiment.streaming/1"


def chunk_modes(chunks_ms: list) -> list[str]:
    """Chunk specs in ms, ``640`` or ``"480+160"`` (chunk + look-ahead), as mode strings; a one-line UserError
    unless each is a positive multiple of 40 ms (and its look-ahead a non-negative one)."""
    modes = []
    for spec in chunks_ms:
        try:
            ms = [int(p) for p in str(spec).split("+")]
        except ValueError:
            ms = []
        if not 1 <= len(ms) <= 2 or ms[0] <= 0 or any(m < 0 or m % 40 for m in ms):
            raise UserError(f"--chunks-ms: expected chunk sizes like 160,320,480+160 (ms, multiples of 40; "
                            f"+LOOKAHEAD optional), got {spec!r}")
        modes.append(f"chunk-bi:{ms[0]}ms" + (f"+{ms[1]}ms" if len(ms) == 2 and ms[1] else ""))
    return modes


def modes_for(bidirectional: bool, chunks_ms: list) -> list[str]:
    if not bidirectional:
        return ["l2r"]
    return ["l2r", *chunk_modes(chunks_ms), "alt", "bi"]


def _wers(model, utts, mode: str, word_lm) -> tuple[dict, dict]:
    """({decoder: WER %}, {decoder: its 95 % bootstrap interval})."""
    from edgeasr.evaluation.bootstrap import summary, word_errors
    from edgeasr.runtimes.vocab import BLANK_ID, VOCAB, ctc_greedy
    from edgeasr.training.train import utterance_logprobs

    model.set_direction(mode)
    lps = utterance_logprobs(model, utts, "cpu")
    refs = [u.text for u in utts]
    hyps = {"greedy": [ctc_greedy(lp, BLANK_ID, VOCAB) for lp in lps]}
    if word_lm is not None:
        hyps["lm"] = [word_lm.decode(lp) for lp in lps]
    got = {dec: summary(word_errors(refs, h)) for dec, h in hyps.items()}
    return {d: v["wer"] for d, v in got.items()}, {d: v["ci95"] for d, v in got.items()}


def _timing(model, config, mode: str, chunk_frames: int, audio: list[np.ndarray], tmp: Path,
            lookahead_frames: int = 0) -> dict:
    """Export the step graph of ``mode`` and stream ``audio`` through it on ORT, 1 thread."""
    from edgeasr.exporters.onnx_export import export
    from edgeasr.runtimes.recognizer import Recognizer
    from edgeasr.runtimes.streaming_io import stream_samples

    direction = "chunk-bi" if mode.startswith("chunk-bi") else "l2r"
    path = tmp / f"{mode.replace(':', '-').replace('+', '-')}.step.onnx"
    export(model, config, path, "step", direction, chunk_frames, verify=False, lookahead_frames=lookahead_frames)
    first, compute, seconds = [], 0.0, 0.0
    with Recognizer(str(path), "ort", threads=1) as rec:
        sr = rec.sample_rate
        for a in audio:
            shown = []
            t = time.perf_counter()
            _, lat, _ = stream_samples(rec, a, sr, on_partial=lambda text, pos: shown.append(pos))
            compute += time.perf_counter() - t
            seconds += len(a) / sr
            if shown:  # audio position of the first partial + the compute of the piece that produced it
                first.append(shown[0] + float(np.median(lat)))
    return {"rtf": round(compute / max(seconds, 1e-9), 4),
            "first_partial_ms": round(float(np.median(first)) * 1000, 1) if first else None,
            "chunk_ms": chunk_frames * 10, "lookahead_ms": lookahead_frames * 10, "timing_utterances": len(audio)}


def streaming_table(model_refs: list[str], test: Path, real: Path | None = None, lm_dir: Path | None = None,
                    chunks_ms: list[int] = (160, 320, 640, 1280), l2r_chunk_ms: int = 320, limit: int = 0,
                    timing_utts: int = 20, threads: int = 2, out: Path = Path("work/experiment"),
                    say=None, bar=None) -> tuple[dict, dict]:
    """``bar``: an ``edgeasr.progress`` bar, advanced per model x mode (its WERs and, if streamable, timing)."""
    import torch

    from edgeasr.data.manifest import read_manifest
    from edgeasr.pretrained import load_model
    from edgeasr.runtimes.audio import load_audio
    from edgeasr.runtimes.features import FbankOptions
    from edgeasr.runtimes.files import check_out_dir, write_report_files
    from edgeasr.training.dataset import load_utterances

    say = say or (lambda *_: None)
    if not model_refs:
        raise UserError("give at least one --model")
    chunk_modes(chunks_ms)  # a bad size fails before anything loads
    sets = {"test": Path(test), **({"real": Path(real)} if real else {})}
    for name, p in sets.items():
        if not p.is_file():
            raise UserError(f"{p}: {name} manifest not found")
    if lm_dir:
        from edgeasr.runtimes.lm_decoder import read_lm_info

        read_lm_info(lm_dir)
    out = check_out_dir(out)
    torch.set_num_threads(max(1, threads))
    loaded = [(ref, *load_model(ref)) for ref in model_refs]  # a bad --model fails before any decoding
    rows = []
    task = bar.add_task("streaming modes", total=sum(len(modes_for(m.bidirectional, list(chunks_ms)))
                                                     for _, m, _ in loaded), unit="modes") if bar else None
    for ref, model, config in loaded:
        opts = FbankOptions.from_dict(config["features"])
        word_lm = None
        if lm_dir:
            from edgeasr.runtimes.lm_decoder import WordLM
            from edgeasr.runtimes.vocab import BLANK_ID, VOCAB

            word_lm = WordLM(lm_dir, VOCAB, BLANK_ID)
        data = {}
        for name, p in sets.items():
            entries = list(read_manifest(p))[:limit or None]
            if not entries:
                raise UserError(f"{p}: empty manifest")
            data[name] = (entries, load_utterances(entries, opts, jobs=1))
        timing_audio = [load_audio(e.audio_filepath, opts.sample_rate)[0] for e in data["test"][0][:timing_utts]]
        with tempfile.TemporaryDirectory(prefix="edgeasr-streaming.") as tmp:
            for mode in modes_for(model.bidirectional, list(chunks_ms)):
                row = {"model": ref, "mixer": config["model"]["mixer"], "mode": mode, "wer": {}, "ci95": {}}
                for name, (_, utts) in data.items():
                    row["wer"][name], row["ci95"][name] = _wers(model, utts, mode, word_lm)
                if mode == "l2r" or mode.startswith("chunk-bi"):
                    frames = parse_mode(mode)[1] if ":" in mode else l2r_chunk_ms // 10
                    row.update(_timing(model, config, mode, frames, timing_audio, Path(tmp), parse_lookahead(mode)))
                say(f"{ref} {mode}: " + ", ".join(f"{k} {v}" for k, v in row["wer"].items()) +
                    (f", RTF {row['rtf']}" if "rtf" in row else ""))
                rows.append(row)
                if bar:
                    bar.advance(task)
    report = {"schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "sets": {k: {"manifest": str(v), "utterances": len(data[k][0])} for k, v in sets.items()},
              "lm": str(lm_dir) if lm_dir else None, "timing": "ORT CPU, 1 thread, Recognizer fed chunk by chunk",
              "rows": rows}
    return report, write_report_files(out, "streaming", {"json": json.dumps(report, indent=2) + "\n",
                                                         "md": markdown(report)})


def markdown(report: dict) -> str:
    sets = list(report["sets"])
    lm = report["lm"] is not None
    head = ["model", "mode"]
    for s in sets:
        head += [f"{s} WER %"] + ([f"{s} + LM"] if lm else [])
    head += ["RTF (ORT, 1 thread)", "first partial ms"]
    lines = ["# Streaming modes", "",
             f"{report['created']} · " + " · ".join(f"{k}: {v['manifest']} ({v['utterances']} utterances)"
                                                  for k, v in report["sets"].items()) +
             f" · greedy CTC{' and word LM ' + report['lm'] if lm else ''} · timing: {report['timing']}. "
             "WER % [95 % bootstrap interval over utterances].", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["rows"]:
        cells = [r["model"], r["mode"]]
        for s in sets:
            for dec in ("greedy", "lm") if lm else ("greedy",):
                ci = r.get("ci95", {}).get(s, {}).get(dec)
                cells.append(f"{r['wer'][s][dec]:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else ""))
        cells.append(f"{r['rtf']:.3f}" if "rtf" in r else "offline")
        cells.append(f"{r['first_partial_ms']:.0f}" if r.get("first_partial_ms") is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
