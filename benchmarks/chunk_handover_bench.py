"""RWKV-6 full-sequence graphs: two-level vs one-level chunk-state hand-over (models/mixers/chunk_scan.py).

Exports the same model's full graph twice (the shipped two-level hand-over, and the one-level decay-weighted sum
over all chunks that it replaced), checks both give the same log-probabilities, then times them interleaved on
ONNX Runtime CPU per input length (encoder only, model load and a warm-up run excluded, median of the repeats) and
prints two-level / one-level time ratios measured in this one run. Lengths whose one-level run would not fit
``--mem-cap-mb`` (its E x E x K tensor per head) are reported as skipped.

Usage: python benchmarks/chunk_handover_bench.py [--model default] [--lengths 3,10,60,480] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models.mixers.rwkv as rwkv  # noqa: E402
from exporters.onnx_export import export  # noqa: E402
from toolchain.cli_model import load_model  # noqa: E402


def export_full(model: str, out: Path, group: int) -> Path:
    rwkv.FULL_SEQUENCE_GROUP = group  # read at call time by RWKV6TimeMix.forward
    encoder, config = load_model(model, "bi")
    if encoder.cfg.mixer != "rwkv":
        raise SystemExit(f"{model}: mixer {encoder.cfg.mixer}, this benchmark compares RWKV-6 hand-overs")
    export(encoder, config, out, "full", "bi", 32, verify=False)
    return out


def one_level_bytes(model_cfg, seconds: float) -> float:
    """Size of one E x E x K fp32 tensor over all heads (what the one-level hand-over materialises per call)."""
    chunks = seconds * 100 / model_cfg.subsampling / 16 + 1
    return chunks * chunks * model_cfg.d_model * 4


def main():
    import onnxruntime as ort

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--lengths", default="3,10,60,480", help="seconds of audio, comma-separated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mem-cap-mb", type=float, default=2000)
    args = ap.parse_args()
    grouped = rwkv.FULL_SEQUENCE_GROUP
    encoder, _ = load_model(args.model, "bi")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"two-level": export_full(args.model, Path(tmp) / "grouped.onnx", grouped),
                 "one-level": export_full(args.model, Path(tmp) / "flat.onnx", 0)}
        rwkv.FULL_SEQUENCE_GROUP = grouped
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = args.threads
        sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
                    for k, p in paths.items()}
        print(f"{args.model}: RWKV-6 bi full graph, group {grouped} chunks, ORT CPU {args.threads} thread(s)")
        print(f"{'audio':>8} {'one-level s':>12} {'two-level s':>12} {'two/one':>8} {'max |diff|':>11}")
        for seconds in (float(s) for s in args.lengths.split(",")):
            T = int(seconds * 100)
            x = np.random.default_rng(0).standard_normal((1, T, 80)).astype(np.float32)
            feed = {"x": x, "x_lens": np.array([T], np.int64)}
            if one_level_bytes(encoder.cfg, seconds) * 3 / 2**20 > args.mem_cap_mb:
                t0 = time.perf_counter()
                sessions["two-level"].run(None, feed)
                print(f"{seconds:7.0f}s {'skipped: mem':>12} {time.perf_counter() - t0:12.3f}")
                continue
            reps = 7 if seconds <= 10 else 3 if seconds <= 60 else 1
            times: dict[str, list[float]] = {k: [] for k in sessions}
            outs = {k: s.run(None, feed)[0] for k, s in sessions.items()}  # warm-up, and the outputs to compare
            for r in range(reps):
                for k in (("one-level", "two-level") if r % 2 == 0 else ("two-level", "one-level")):
                    t0 = time.perf_counter()
                    sessions[k].run(None, feed)
                    times[k].append(time.perf_counter() - t0)
            one, two = statistics.median(times["one-level"]), statistics.median(times["two-level"])
            diff = float(np.abs(outs["one-level"] - outs["two-level"]).max())
            print(f"{seconds:7.0f}s {one:12.3f} {two:12.3f} {two / one:8.2f} {diff:11.1e}")


if __name__ == "__main__":
    main()
