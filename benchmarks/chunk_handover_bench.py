"""RWKV-6 / Mamba-2 full-sequence graphs: two-level vs one-level chunk-state hand-over (models/mixers/chunk_scan.py).

Exports the same model's full graph twice (the shipped two-level hand-over, and the one-level decay-weighted sum
over all chunks that it replaced), checks both give the same log-probabilities, then times them interleaved on
ONNX Runtime CPU per input length (encoder only, model load and a warm-up run excluded, median of the repeats) and
prints two-level / one-level time ratios measured in this one run. Lengths whose one-level run would not fit
``--mem-cap-mb`` (RWKV-6's E x E x K tensor per head) are reported as skipped.

Usage: python benchmarks/chunk_handover_bench.py [--model default|mamba2-dirdrop-both|RUN] [--lengths 3,10,60,480]
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

import models.mixers.mamba2 as mamba2  # noqa: E402
import models.mixers.rwkv as rwkv  # noqa: E402
from exporters.onnx_export import export  # noqa: E402
from toolchain.cli_model import load_model  # noqa: E402


MIXER_MODULES = {"rwkv": rwkv, "mamba2": mamba2}  # each reads FULL_SEQUENCE_GROUP at call time


def export_full(model: str, out: Path, group: int) -> Path:
    encoder, config = load_model(model, "bi")
    module = MIXER_MODULES[encoder.cfg.mixer]
    before, module.FULL_SEQUENCE_GROUP = module.FULL_SEQUENCE_GROUP, group
    try:
        export(encoder, config, out, "full", "bi", 32, verify=False)
    finally:
        module.FULL_SEQUENCE_GROUP = before
    return out


def one_level_bytes(model_cfg, seconds: float, chunk_len: int) -> float:
    """Size of the largest one-level hand-over tensor (RWKV-6: E x E x K over all heads; Mamba-2: E x E per head)."""
    chunks = seconds * 100 / model_cfg.subsampling / chunk_len + 1
    return chunks * chunks * (model_cfg.d_model if model_cfg.mixer == "rwkv" else 16) * 4


def main():
    import onnxruntime as ort

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--lengths", default="3,10,60,480", help="seconds of audio, comma-separated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mem-cap-mb", type=float, default=2000)
    args = ap.parse_args()
    from models.mixers.chunk_scan import FULL_SEQUENCE_GROUP as grouped

    encoder, _ = load_model(args.model, "bi")
    if encoder.cfg.mixer not in MIXER_MODULES:
        raise SystemExit(f"{args.model}: mixer {encoder.cfg.mixer}; this benchmark compares RWKV-6 / Mamba-2 "
                         "hand-overs")
    chunk_len = encoder.layers[0].mixer.l2r.chunk_len
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"two-level": export_full(args.model, Path(tmp) / "grouped.onnx", grouped),
                 "one-level": export_full(args.model, Path(tmp) / "flat.onnx", 0)}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = args.threads
        sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
                    for k, p in paths.items()}
        print(f"{args.model}: {encoder.cfg.mixer} bi full graph, chunks of {chunk_len} frames, groups of {grouped} "
              f"chunks, ORT CPU {args.threads} thread(s)")
        print(f"{'audio':>8} {'one-level s':>12} {'two-level s':>12} {'two/one':>8} {'max |diff|':>11}")
        for seconds in (float(s) for s in args.lengths.split(",")):
            T = int(seconds * 100)
            x = np.random.default_rng(0).standard_normal((1, T, 80)).astype(np.float32)
            feed = {"x": x, "x_lens": np.array([T], np.int64)}
            if one_level_bytes(encoder.cfg, seconds, chunk_len) * 3 / 2**20 > args.mem_cap_mb:
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
