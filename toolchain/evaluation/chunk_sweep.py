"""``edgeasr experiment chunk-sweep``: seed 001's table on our data.

Each model runs in strict chunks (every chunk alone through its full ONNX graph, no state or context across chunks:
``bench``'s ``chunk`` mode) at every chunk size, on ONNX Runtime CPU: greedy WER with its 95 % bootstrap interval,
the paired-bootstrap ΔWER against the first model (seed 001's baseline, ``mha``) at the same chunk, parameters, and
encoder RTF (features precomputed; median over utterances, 1 thread by default). A model trained for strict chunks
(``edgeasr train --strict-chunk-ms``) is the fair entry; any other model runs too and its row says how it was
trained, so a mismatch is visible rather than hidden.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from edgeasr.runtimes.errors import UserError

SCHEMA = "edgeasr.experiment.chunk_sweep/1"
DEFAULT_MODELS = ("mha-strict", "none-strict", "deformable-strict")


def chunk_sweep(model_refs, test: Path, out: Path, chunks_ms: list[int], limit: int = 0, threads: int = 1,
                backend: str = "ort", say=None, bar=None) -> tuple[dict, dict]:
    """``bar``: an ``edgeasr.progress`` bar, advanced per utterance decoded."""
    from edgeasr.models.checkpoint import read_config
    from edgeasr.runtimes.files import atomic_write, check_out_dir, write_report_files
    from edgeasr.evaluation.bench import sweep, trained_model
    from edgeasr.evaluation.plots import sweep_png

    say = say or (lambda *_: None)
    test = Path(test)
    if not test.is_file():
        raise UserError(f"{test}: test manifest not found")
    out = check_out_dir(out)
    models = [trained_model(r) for r in (model_refs or DEFAULT_MODELS)]  # a bad --model fails before decoding
    rows = sweep(models, chunks_ms, [backend], test, limit, out, threads, say, modes=("chunk",), bar=bar)
    trained = {}
    for m in models:
        cfg = read_config(Path(m.run_dir))["model"]
        strict = cfg.get("strict_chunk_ms") or []
        trained[m.label] = (f"strict chunks {','.join(f'{c:g}' for c in strict)} ms" if strict else
                            f"{cfg.get('direction', 'bi')}, {'causal' if cfg.get('causal', True) else 'non-causal'}"
                            " (not trained for strict chunks)")
    report = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "test": str(test), "utterances": rows[0]["utterances"] if rows else 0, "backend": backend,
        "threads": threads, "chunks_ms": list(chunks_ms),
        "models": [{"model": m.label, "mixer": m.mixer, "parameters": m.parameters, "trained": trained[m.label]}
                   for m in models],
        "rows": rows,
    }
    texts = {"json": json.dumps(report, indent=2) + "\n", "md": markdown(report)}
    png = sweep_png(rows)
    paths = write_report_files(out, "chunk_sweep", texts)
    if png is not None:
        paths["png"] = out / "chunk_sweep.png"
        atomic_write(paths["png"], png)
    return report, paths


def markdown(report: dict) -> str:
    params = {m["model"]: m for m in report["models"]}
    lines = [f"# Strict-chunk sweep (seed 001) on {report['test']}", "",
             f"{report['utterances']} utterances, greedy CTC, {report['backend']} CPU, {report['threads']} "
             "thread(s); every chunk encoded alone. WER with its 95 % bootstrap interval; ΔWER paired against "
             "the first model at the same chunk (not significant when its interval holds 0); RTF: encoder only, "
             "median over utterances.", "",
             "| model | params | trained | chunk ms | WER % (95 % CI) | ΔWER (95 % CI) | significant | RTF |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        m = params[r["model"]]
        if r.get("status") != "ok":
            lines.append(f"| {r['model']} | {m['parameters'] / 1e6:.2f} M | {m['trained']} | {r['chunk_ms']} | "
                         f"{r.get('status')} | | | |")
            continue
        lo, hi = r["ci95"]
        delta = ""
        sig = ""
        if "delta" in r:
            dlo, dhi = r["delta_ci95"]
            delta = f"{r['delta']:+.2f} ({dlo:+.2f}..{dhi:+.2f}) vs {r['delta_vs']}"
            sig = "yes" if r["significant"] else "no"
        lines.append(f"| {r['model']} | {m['parameters'] / 1e6:.2f} M | {m['trained']} | {r['chunk_ms']} | "
                     f"{r['wer']:.2f} ({lo:.2f}-{hi:.2f}) | {delta} | {sig} | {r['rtf_median']:.4f} |")
    return "\n".join(lines) + "\n"
