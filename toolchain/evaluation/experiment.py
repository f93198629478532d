"""``edgeasr experiment dirdrop``: seed 000's Direction Dropout table on our data.

Every given checkpoint is decoded in the three inference modes (``l2r`` streamable, ``alt`` even layers L2R / odd
layers R2L, ``bi``) with the torch reference and greedy CTC (``edgeasr.training.train.evaluate``), on the same test
utterances. The DirDrop variant of each model (none / r2l / both, and its p) is read from its ``config.json``, not
from its name. For every bidirectional mixer that appears, each of the three variants gets a row: a variant with no
model given is a ``not trained`` row, never silently absent.

Every WER has its 95 % bootstrap interval over utterances (``ci95``); every model other than a mixer's baseline
(its no-DirDrop model, else the first given) has the paired-bootstrap ΔWER against that baseline per mode
(``delta_vs``, ``delta``, ``delta_ci95``, ``significant``: false when the interval holds 0).
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from edgeasr.runtimes.errors import UserError

SCHEMA = "edgeasr.experiment.dirdrop/1"
VARIANTS = ("none", "r2l", "both")
VARIANT_NAMES = {"none": "no DirDrop", "r2l": "DirDrop-R2L", "both": "DirDrop-Both"}
MODES = ("l2r", "alt", "bi")


def _select(entries: list, limit: int) -> list:
    if limit and len(entries) > limit:
        if limit == 1:
            return entries[:1]
        return [entries[round(i * (len(entries) - 1) / (limit - 1))] for i in range(limit)]
    return entries


def dirdrop(model_refs, test: Path, out: Path, limit: int = 100, threads: int = 1, say=None,
            chunks_ms: list[int] = (), bar=None) -> tuple[dict, dict]:
    """``chunks_ms``: also decode in chunk-bi at these chunk sizes (streamable, R2L within each chunk; ``"320+320"``
    adds a look-ahead); ``bar``: an ``edgeasr.progress`` bar, advanced per model x mode decoded."""
    import torch

    from edgeasr.runtimes.features import FbankOptions
    from edgeasr.runtimes.files import check_out_dir, write_report_files
    from edgeasr import pretrained
    from edgeasr.pretrained import load_model
    from edgeasr.training.dataset import load_utterances
    from edgeasr.data.manifest import read_manifest
    from edgeasr.training.train import evaluate
    from edgeasr.evaluation.bootstrap import delta_summary, summary, word_errors
    from edgeasr.evaluation.streaming import chunk_modes

    say = say or (lambda *_: None)
    modes = [MODES[0], *chunk_modes(chunks_ms), *MODES[1:]]
    if not model_refs:
        raise UserError("give at least one --model (no DirDrop, DirDrop-R2L, DirDrop-Both checkpoints)")
    test = Path(test)
    if not test.is_file():
        raise UserError(f"{test}: test manifest not found")
    out = check_out_dir(out)
    torch.set_num_threads(max(1, threads))
    loaded = []
    for ref in model_refs:  # load all first: a bad --model fails before any decoding
        model, config = load_model(ref)
        m = config["model"]
        if not model.bidirectional:
            raise UserError(f"{ref}: mixer {m['mixer']} is not bidirectional; DirDrop applies to rwkv and mamba2")
        loaded.append((ref, model, config))
    entries = _select(list(read_manifest(test)), limit)
    if not entries:
        raise UserError(f"{test}: empty test manifest")
    utt_cache: dict[str, list] = {}
    rows = []
    pairs: dict[int, dict] = {}  # id(row) -> mode -> per-utterance (errors, words)
    task = bar.add_task("dirdrop", total=len(loaded) * len(modes), unit="decodes") if bar else None
    for ref, model, config in loaded:
        m = config["model"]
        key = json.dumps(config["features"], sort_keys=True)
        if key not in utt_cache:
            utt_cache[key] = load_utterances(entries, FbankOptions.from_dict(config["features"]), jobs=1)
        utts = utt_cache[key]
        path = pretrained.resolve_model_dir(ref)
        summary_file = Path(path) / "summary.json"
        row = {"mixer": m["mixer"], "variant": m.get("dirdrop", "none"),
               "variant_name": VARIANT_NAMES.get(m.get("dirdrop", "none"), m.get("dirdrop")),
               "dirdrop_p": m.get("dirdrop_p", 0.0), "model": ref, "path": str(path), "status": "ok",
               "parameters": config.get("parameters"), "train_steps": config.get("metrics", {}).get("step"),
               "dev_wer": config.get("metrics", {}).get("dev_wer"),
               "training_finished": summary_file.is_file() or "card" in config, "utterances": len(utts), "wer": {},
               "ci95": {}}
        pairs[id(row)] = {}
        for mode in modes:
            try:
                model.set_direction(mode)
            except ValueError as e:
                raise UserError(f"--chunks-ms: {e}") from None
            _, hyps = evaluate(model, utts, "cpu")
            p = pairs[id(row)][mode] = word_errors([u.text for u in utts], hyps)
            w = summary(p)
            row["wer"][mode], row["ci95"][mode] = w["wer"], w["ci95"]
            say(f"{m['mixer']} {row['variant_name']} ({ref}) {mode}: WER {row['wer'][mode]:.2f}%")
            if bar:
                bar.advance(task)
        rows.append(row)
    for mixer in dict.fromkeys(r["mixer"] for r in rows):
        ok = [r for r in rows if r["mixer"] == mixer]
        base = next((r for r in ok if r["variant"] == "none"), ok[0])
        for r in ok:
            if r is base:
                continue
            d = {m: delta_summary(pairs[id(base)][m], pairs[id(r)][m]) for m in modes}
            r.update(delta_vs=base["model"], delta={m: v["delta"] for m, v in d.items()},
                     delta_ci95={m: v["delta_ci95"] for m, v in d.items()},
                     significant={m: v["significant"] for m, v in d.items()})
    for mixer in dict.fromkeys(r["mixer"] for r in rows):
        have = {r["variant"] for r in rows if r["mixer"] == mixer}
        for v in VARIANTS:
            if v not in have:
                rows.append({"mixer": mixer, "variant": v, "variant_name": VARIANT_NAMES[v], "dirdrop_p": None,
                             "model": None, "status": "not trained", "wer": {}})
    order = {v: i for i, v in enumerate(VARIANTS)}
    rows.sort(key=lambda r: (r["mixer"], order.get(r["variant"], 9)))
    report = {"schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "test": str(test), "utterances": len(entries), "decoder": "torch reference, greedy CTC",
              "modes": modes, "rows": rows}
    return report, write_report_files(out, "dirdrop", {"json": json.dumps(report, indent=2) + "\n",
                                                       "md": markdown(report)})


def markdown(report: dict) -> str:
    modes = report.get("modes", list(MODES))
    lines = ["# DirDrop experiment (seed 000, Table 4 on our data)", "",
             f"{report['created']} · test set {report['test']} ({report['utterances']} utterances) · "
             f"{report['decoder']}. WER % per inference mode: l2r (streamable), alt (even layers L2R, odd R2L), "
             "bi" + (", chunk-bi:C (streamable: R2L within each chunk of C)" if len(modes) > 3 else "") +
             ", with its 95 % bootstrap interval over utterances.", "",
             "| mixer | training | DirDrop p | " + " | ".join(modes) + " | model | train steps | note |",
             "|---|---|---|" + "---|" * len(modes) + "---|---|---|"]
    for r in report["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['mixer']} | {r['variant_name']} | - | " + "- | " * len(modes) + f"- | - | {r['status']} |")
            continue
        note = "" if r.get("training_finished") else "training not finished (best checkpoint so far)"
        lines.append(f"| {r['mixer']} | {r['variant_name']} | {r['dirdrop_p']:g} | " +
                     " | ".join(f"{r['wer'][m]:.2f} [{_ci(r.get('ci95', {}).get(m))}]" for m in modes) +
                     f" | {r['model']} | {r.get('train_steps') or '-'} | {note} |")
    deltas = [r for r in report["rows"] if r.get("delta_ci95")]
    if deltas:
        lines += ["", "ΔWER (points) against each mixer's baseline (no DirDrop, else the first model given), paired "
                      "95 % bootstrap CI; * = significant (the interval excludes 0):", "",
                  "| mixer | training | vs | " + " | ".join(modes) + " |", "|---|---|---|" + "---|" * len(modes)]
        for r in deltas:
            lines.append(f"| {r['mixer']} | {r['variant_name']} | {r['delta_vs']} | " + " | ".join(
                f"{r['delta'][m]:+.2f} [{_ci(r['delta_ci95'][m], True)}]{'*' if r['significant'][m] else ''}"
                for m in modes) + " |")
    return "\n".join(lines) + "\n"


def _ci(ci, signed: bool = False) -> str:
    if not ci:
        return "-"
    f = "+.2f" if signed else ".1f"
    return f"{ci[0]:{f}}, {ci[1]:{f}}"
