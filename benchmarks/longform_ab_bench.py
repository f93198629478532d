"""Long-form forms of the full-sequence graphs against the quadratic forms they replaced, timed in one run.

- RWKV-6 / Mamba-2: two-level chunk-state hand-over vs one decay-weighted sum over all chunks
  (models/mixers/chunk_scan.py);
- mha (l2r): attention in blocks of the left context vs one T x T masked softmax (models/mixers/mha.py).

Exports the model's full graph both ways, checks both give the same log-probabilities, then times them interleaved on
ONNX Runtime CPU per input length (encoder only, model load and a warm-up run excluded, median of the repeats) and
prints new / old time ratios measured in this one run. Lengths whose old graph would not fit ``--mem-cap-mb`` (its
largest quadratic tensor) are reported as skipped.

Usage: python benchmarks/longform_ab_bench.py [--model default|mamba2-dirdrop-both|mha|RUN] [--lengths 3,10,60,480]
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

import edgeasr.models.mixers.mamba2 as mamba2  # noqa: E402
import edgeasr.models.mixers.mha as mha  # noqa: E402
import edgeasr.models.mixers.rwkv as rwkv  # noqa: E402
from edgeasr.exporters.onnx_export import export  # noqa: E402
from edgeasr.pretrained import load_model  # noqa: E402

# per mixer: (module, its switch read at call time, new value, old value, direction of the full graph compared)
SWITCHES = {"rwkv": (rwkv, "FULL_SEQUENCE_GROUP", rwkv.FULL_SEQUENCE_GROUP, 0, "bi"),
            "mamba2": (mamba2, "FULL_SEQUENCE_GROUP", mamba2.FULL_SEQUENCE_GROUP, 0, "bi"),
            "mha": (mha, "BLOCKED_L2R", True, False, "l2r")}


def export_full(model: str, out: Path, new: bool) -> Path:
    encoder, config = load_model(model)
    module, name, new_value, old_value, direction = SWITCHES[encoder.cfg.mixer]
    encoder.set_direction(direction)
    before = getattr(module, name)
    setattr(module, name, new_value if new else old_value)
    try:
        export(encoder, config, out, "full", direction, 32, verify=False)
    finally:
        setattr(module, name, before)
    return out


def old_form_bytes(encoder, seconds: float) -> float:
    """Largest quadratic tensor of the old form: RWKV-6 E x E x K over all heads, Mamba-2 E x E per head (x16 heads
    at most), mha T x T per head."""
    frames = seconds * 100 / encoder.cfg.subsampling
    mixer = encoder.layers[0].mixer
    if encoder.cfg.mixer == "mha":
        return frames * frames * mixer.heads * 4
    chunks = frames / mixer.l2r.chunk_len + 1
    return chunks * chunks * (encoder.cfg.d_model if encoder.cfg.mixer == "rwkv" else 16) * 4


def main():
    import onnxruntime as ort

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--lengths", default="3,10,60,480", help="seconds of audio, comma-separated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mem-cap-mb", type=float, default=2000)
    args = ap.parse_args()
    encoder, _ = load_model(args.model)
    if encoder.cfg.mixer not in SWITCHES:
        raise SystemExit(f"{args.model}: mixer {encoder.cfg.mixer} has no quadratic full form to compare "
                         f"(choose a model with mixer {', '.join(SWITCHES)})")
    direction = SWITCHES[encoder.cfg.mixer][4]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"new": export_full(args.model, Path(tmp) / "new.onnx", True),
                 "old": export_full(args.model, Path(tmp) / "old.onnx", False)}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = args.threads
        sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
                    for k, p in paths.items()}
        print(f"{args.model}: {encoder.cfg.mixer} {direction} full graph, ORT CPU {args.threads} thread(s); "
              "old = quadratic form, new = long-form form")
        print(f"{'audio':>8} {'old s':>12} {'new s':>12} {'new/old':>8} {'max |diff|':>11}")
        for seconds in (float(s) for s in args.lengths.split(",")):
            T = int(seconds * 100)
            x = np.random.default_rng(0).standard_normal((1, T, 80)).astype(np.float32)
            feed = {"x": x, "x_lens": np.array([T], np.int64)}
            if old_form_bytes(encoder, seconds) * 3 / 2**20 > args.mem_cap_mb:
                t0 = time.perf_counter()
                sessions["new"].run(None, feed)
                print(f"{seconds:7.0f}s {'skipped: mem':>12} {time.perf_counter() - t0:12.3f}")
                continue
            reps = 7 if seconds <= 10 else 3 if seconds <= 60 else 1
            times: dict[str, list[float]] = {k: [] for k in sessions}
            outs = {k: s.run(None, feed)[0] for k, s in sessions.items()}  # warm-up, and the outputs to compare
            for r in range(reps):
                for k in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    t0 = time.perf_counter()
                    sessions[k].run(None, feed)
                    times[k].append(time.perf_counter() - t0)
            old, new = statistics.median(times["old"]), statistics.median(times["new"])
            diff = float(np.abs(outs["old"] - outs["new"]).max())
            print(f"{seconds:7.0f}s {old:12.3f} {new:12.3f} {new / old:8.2f} {diff:11.1e}")


if __name__ == "__main__":
    from edgeasr.runtimes.errors import UserError

    try:
        main()
    except UserError as e:
        raise SystemExit(f"error: {e}") from None
