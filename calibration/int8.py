"""One verb: ``quantize_model(fp32.onnx, calibration audio, out)`` -> the int8 QDQ artifact (+ report).

Order: cheap refusals (unreadable or already-quantized model, output path) -> node selection -> calibration set
validated up front (every file readable, enough samples) -> calibrate once on real streaming samples (ranges cached
in a temp dir) -> quantize -> optional accuracy-aware fallback on a dev set -> metadata (precision=int8, recipe) ->
checked temp file renamed into place. Any failure leaves nothing at ``out``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from edgeasr.calibration import data as cdata, quantize as q, report as rep, sensitivity as sens
from edgeasr.runtimes.metadata import read_metadata


def quantize_model(model_path, calib_audio: list, out, method: str = "minmax", max_utterances: int | None = 64,
                   max_samples: int | None = 512, dev: list[tuple[str, str]] | None = None,
                   max_wer_drop: float | None = None, max_fallback: float = 0.5, threads: int = 1,
                   progress: Callable[[str, int, int, str], None] | None = None,
                   log: Callable[[str], None] | None = None, sqnr_samples: int = 16,
                   keep_fp32: list[str] | None = None, fmt: str = "qdq") -> dict:
    """Returns the report dict. ``dev``: [(audio path, reference text)] for ``max_wer_drop`` mode. ``keep_fp32``:
    glob patterns of node names kept in fp32 whatever the rule says (``quantize.keep_in_fp32``). ``fmt``: ``qdq``
    (the one static QDQ artifact for every backend) or ``dynamic`` (CPU-only: ORT/OpenVINO, int8 weights and
    per-call activation ranges; the calibrated QDQ build still ranks the nodes for the fallback).
    ``progress(stage, done, total, unit)`` reports each stage in its own units: calibration files read, samples
    calibrated, samples of the sensitivity run, dev utterances decoded per candidate."""
    model_path, out = Path(model_path), Path(out)
    log = log or (lambda m: None)

    def stage(name: str, unit: str):
        return (lambda done, total: progress(name, done, total, unit)) if progress else None

    if method not in q.METHODS:
        raise q.QuantizeError(f"unknown calibration method {method!r}; choose {', '.join(q.METHODS)}")
    if fmt not in q.FORMATS:
        raise q.QuantizeError(f"unknown int8 format {fmt!r}; choose {', '.join(q.FORMATS)}")
    model = q.load(model_path)
    meta = read_metadata(model)  # a foreign ONNX file is a one-line MetadataError
    why = q.already_quantized(model)
    if why:
        raise q.QuantizeError(f"{model_path}: already quantized ({why}); quantize the fp32 export instead")
    q.check_output(out)
    if out.resolve() == model_path.resolve():
        raise q.QuantizeError(f"{out}: output would overwrite the input model")
    if max_wer_drop is not None:
        if max_wer_drop < 0:
            raise q.QuantizeError(f"--max-wer-drop must be >= 0, got {max_wer_drop}")
        if not dev:
            raise q.QuantizeError("--max-wer-drop needs a dev set (--dev MANIFEST)")
    choices = q.select_nodes(model)
    if fmt == "dynamic":  # ORT has no dynamic int8 Conv kernel
        for c in choices:
            if c.quantize and c.op_type == "Conv":
                c.quantize, c.reason = False, "dynamic format: MatMul/Gemm only (no dynamic int8 Conv kernel)"
    q.keep_in_fp32(choices, list(keep_fp32 or []))
    candidates = [c.name for c in choices if c.quantize]
    if not candidates:
        raise q.QuantizeError(f"{model_path}: no per-frame Linear/subsampling Conv found to quantize")
    reader = cdata.StreamingCalibrationReader(model_path, calib_audio, max_utterances, max_samples, threads,
                                              stage("calibrating", "samples"),
                                              same_shape=method in q.HISTOGRAM_METHODS)
    planned = cdata.check_calibration(reader, stage("reading calibration audio", "files"))
    log(f"calibrating on {planned['samples']} {meta['graph_kind']} samples from {planned['utterances']} utterances")

    with tempfile.TemporaryDirectory(prefix="edgeasr-quant.") as tmp:
        tmp = Path(tmp)
        cache = tmp / "ranges.json"
        builds = {"n": 0}

        def build_qdq(nodes: list[str]) -> Path:
            builds["n"] += 1
            p = tmp / f"cand{builds['n']}.onnx"
            q.quantize_to(model_path, reader, p, nodes, method, cache)
            reader.progress = None  # the progress bar is for the one calibration pass
            return p

        def build(nodes: list[str]) -> Path:
            if fmt == "qdq":
                return build_qdq(nodes)
            builds["n"] += 1
            p = tmp / f"cand{builds['n']}.onnx"
            q.quantize_dynamic_to(model_path, p, nodes)
            return p

        first_qdq = build_qdq(candidates)
        calib = dict(reader.stats)
        if calib["samples"] < cdata.MIN_SAMPLES:
            raise cdata.CalibrationError(f"calibration set too small: {calib['samples']} sample(s)")
        sensitivity = sens.node_sqnr(model_path, first_qdq, reader, candidates, sqnr_samples,
                                     stage("node sensitivity", "samples"))
        first = first_qdq if fmt == "qdq" else build(candidates)
        quantized, kept_fb, dev_info, chosen = candidates, [], None, first
        if max_wer_drop is not None:
            utts = [(cdata.utterance_features(a, meta), t) for a, t in dev]
            log(f"dev set: {len(utts)} utterances")
            wer_fp32 = sens.dev_wer(model_path, utts, threads, stage("dev WER, fp32", "utts"))
            paths = {}

            def build_tracked(nodes):
                p = build(nodes)
                paths[p] = nodes
                return p

            wer_first = sens.dev_wer(first, utts, threads, stage("dev WER, int8", "utts"))
            paths[first] = candidates
            last = {"p": first}

            def evaluate(p: Path) -> float:
                last["p"] = p
                kept = len(candidates) - len(paths[p])
                return sens.dev_wer(p, utts, threads, stage(f"dev WER, int8 with {kept} node(s) in fp32", "utts"))

            try:
                res = sens.greedy_fallback(candidates, sensitivity, build_tracked, evaluate, wer_fp32, max_wer_drop,
                                           max_fallback, (first, wer_first), log)
            except sens.BudgetError as e:
                raise q.QuantizeError(f"{e}; nothing written to {out}") from None
            quantized, kept_fb, chosen = res.quantized, res.kept, last["p"]
            dev_info = {"utterances": len(utts), "wer_fp32": res.wer_fp32, "wer_int8": res.wer_int8,
                        "delta_wer": res.delta, "budget": max_wer_drop, "trials": res.trials}
        kept = [{"node": c.name, "reason": "accuracy fallback" if c.name in kept_fb else c.reason}
                for c in choices if c.name not in set(quantized)]
        calib_meta = {"utterances": calib["utterances"], "samples": calib["samples"], "graph_kind": meta["graph_kind"],
                      "streaming_states": meta["graph_kind"] == "step",
                      "samples_with_nonzero_state": calib["samples_with_nonzero_state"]}
        recipe = q.recipe(method, calib_meta, quantized, kept,
                          None if dev_info is None else {k: v for k, v in dev_info.items() if k != "trials"}, fmt)
        final = q.finalize(chosen, model, recipe)
        size = q.write_atomic(final, out)
    report = rep.build_report(str(model_path), str(out), method, calib_meta, choices, sensitivity, quantized,
                              kept_fb, dev_info, (model_path.stat().st_size, size))
    report["format"] = fmt
    return report
