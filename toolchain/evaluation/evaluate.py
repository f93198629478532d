"""WER/CER of a model per manifest x direction mode [x group of rows] [x decoder] (``edgeasr eval``).

The model is what a user names (``edgeasr.model_ref``): a checkpoint on the torch reference, decodable in every
mode its mixer has, or an exported ONNX file on its backend, in the one mode it was exported in."""
from __future__ import annotations

import sys
from pathlib import Path

from edgeasr.runtimes.errors import UserError


def group_key(row: dict, by: str) -> str | None:
    """The group of a manifest row for ``eval --by``: the field's value, or for ``engine`` the TTS engine that
    prefixes a synthetic corpus's voice name (``engine:voice``), so a corpus can be scored per engine as written."""
    if by in row:
        return str(row[by])
    if by == "engine" and ":" in str(row.get("voice", "")):
        return str(row["voice"]).split(":", 1)[0]
    return None


def evaluate_model(model: str, manifests: list[Path], modes: list[str] | None = None, by: str | None = None,
                   lm_dir: Path | None = None, backend: str | None = None, threads: int = 1,
                   skip_bad_rows: bool = False, bar=None) -> list[dict]:
    """One row per manifest x mode [x group] [x decoder]: ``{manifest, direction, [group], [decoder], wer, cer,
    utterances, ci95}`` (percentages; ``ci95``: the WER's 95 % bootstrap interval over utterances). ``modes`` None:
    every mode of a checkpoint, the exported one of an ONNX file. ``bar``: an ``edgeasr.progress`` bar, advanced
    per utterance of each stage (features, log-probs per mode, LM decoding)."""
    from edgeasr.data.manifest import read_manifest
    from edgeasr.evaluation.bootstrap import summary, word_errors
    from edgeasr.evaluation.metrics import cer
    from edgeasr.evaluation.model_logprobs import ModelLogprobs
    from edgeasr.model_ref import exported_mode_error
    from edgeasr.progress import progress_bar
    from edgeasr.runtimes.vocab import ctc_greedy

    if lm_dir:
        from edgeasr.runtimes.lm_decoder import read_lm_info

        read_lm_info(lm_dir)  # a bad LM directory fails before the model loads or any audio is read
    modes = list(modes or [])
    rows = []
    bar = bar or progress_bar(quiet=True)
    task = bar.add_task(f"loading {model}", total=None, unit="utts")

    def advance(n: int = 1) -> None:
        bar.advance(task, n)

    with ModelLogprobs(model, backend, threads) as source:
        wrong = [d for d in modes if not source.supports(d)]
        if source.onnx and wrong:
            raise exported_mode_error(model, source.modes[0], wrong)
        if modes and len(wrong) == len(modes):
            raise UserError(f"{model}: cannot decode in {', '.join(wrong)} (its modes: {', '.join(source.modes)})")
        modes = [d for d in (modes or source.default_modes)
                 if source.supports(d)]  # alt/bi on a unidirectional mixer: not a mode of this model
        word_lm = None
        if lm_dir:
            from edgeasr.runtimes.lm_decoder import WordLM

            word_lm = WordLM(lm_dir, source.vocab, source.blank_id)
        for m in manifests:
            entries = read_manifest(m, on_error="skip" if skip_bad_rows else "fail")
            bad = [] if skip_bad_rows else None
            bar.reset(task, total=len(entries), description=f"features {Path(m).name}")
            utts = source.utterances(entries, bad, progress=advance)
            if bad:  # unreadable audio rows are skipped like malformed ones, and listed the same way
                _list_skipped(m, bad)
                skipped = {id(e) for e, _ in bad}
                entries = [e for e in entries if id(e) not in skipped]
                if not entries:
                    raise UserError(f"{m}: no row with readable audio ({len(bad)} skipped)")
            groups = {"all": list(range(len(entries)))}
            if by:
                keys = [group_key(e.extra, by) for e in entries]
                if all(k is None for k in keys):
                    fields = sorted({k for e in entries for k in e.extra})
                    raise UserError(f"{m}: no row has the field {by!r} (fields: {', '.join(fields) or 'none'})")
                for i, k in enumerate(keys):
                    groups.setdefault("(none)" if k is None else k, []).append(i)
            for d in modes:
                bar.reset(task, total=len(utts), description=f"{d} {Path(m).name}")
                logprobs = source.logprobs(utts, d, progress=advance)
                decoded = {"greedy": [ctc_greedy(lp, source.blank_id, source.vocab) for lp in logprobs]}
                if word_lm:
                    bar.reset(task, total=len(utts), description=f"{d} LM beam search {Path(m).name}")
                    decoded["lm"] = []
                    for lp in logprobs:
                        decoded["lm"].append(word_lm.decode(lp))
                        advance()
                for g, idx in sorted(groups.items(), key=lambda kv: (kv[0] != "all", kv[0])):
                    for dec, hyps in decoded.items():
                        refs, hs = [utts[i].text for i in idx], [hyps[i] for i in idx]
                        w = summary(word_errors(refs, hs))  # wer and its 95 % bootstrap interval, percent
                        rows.append({"manifest": str(m), "direction": d, **({"group": g} if by else {}),
                                     **({"decoder": dec} if word_lm else {}),
                                     "wer": w["wer"], "cer": round(cer(refs, hs) * 100, 2),
                                     "utterances": len(idx), "ci95": w["ci95"]})
    return rows


def _list_skipped(manifest, bad: list) -> None:
    print(f"skipped {len(bad)} row(s) of {manifest} with unreadable audio:", file=sys.stderr)
    for e, msg in bad:
        print(f"  {manifest} row {e.row}: {msg}", file=sys.stderr)
