"""int8 benchmark (issue 5 evidence; a benchmark, not a test): per exported fp32 step model

- size fp32 -> int8 (``edgeasr quantize`` recipe, calibrated on streaming states from the train manifest),
- WER fp32 / int8 per backend (ORT CPU; OpenVINO CPU f32 hint, explicit state I/O) on the test manifest,
- RTF fp32 / int8 per backend (encoder + features + greedy decode, streaming chunk by chunk, model load excluded),
  fp32 and int8 measured in the same run, per-utterance medians, and the int8/fp32 speed ratio.

Usage: nice -n 5 python benchmarks/int8_bench.py MODEL.step.onnx [...] --calib work/corpus/train.jsonl \
           --test work/corpus/test.jsonl --max-test 60 --json out.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeasr.calibration.int8 import quantize_model  # noqa: E402
from edgeasr.runtimes.audio import load_audio  # noqa: E402
from edgeasr.runtimes.backends import available, get_backend  # noqa: E402
from edgeasr.runtimes.session import StreamingSession  # noqa: E402
from edgeasr.data.manifest import read_manifest  # noqa: E402
from edgeasr.evaluation.metrics import wer  # noqa: E402


def run_backend(name: str, path: Path, audio: list, threads: int) -> tuple[list[str], list[float]]:
    opts = {"stateful": False} if name == "openvino" else {}  # OpenVINO 2026.4 cannot MakeStateful a QDQ graph
    b = get_backend(name, path, threads=threads, **opts)
    sess = StreamingSession(b)
    hyps, rtfs = [], []
    sess.accept_waveform(audio[0][0][:16000])  # warm-up (first-inference allocations), not timed
    sess.flush()
    sess.reset()
    for samples, dur in audio:
        t0 = time.perf_counter()
        for i in range(0, len(samples), 1600):  # 100 ms pushes, as a live stream
            sess.accept_waveform(samples[i:i + 1600])
        hyps.append(sess.flush())
        rtfs.append((time.perf_counter() - t0) / dur)
        sess.reset()
    b.deactivate()
    return hyps, rtfs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--calib", type=Path, default=ROOT / "work/corpus/train.jsonl")
    ap.add_argument("--test", type=Path, default=ROOT / "work/corpus/test.jsonl")
    ap.add_argument("--max-test", type=int, default=60)
    ap.add_argument("--max-calib", type=int, default=32)
    ap.add_argument("--method", default="minmax")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backends", default="ort,openvino")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    test = read_manifest(a.test)[:a.max_test]
    refs = [e.text for e in test]
    audio = [(load_audio(e.audio_filepath)[0], e.duration) for e in test]
    calib = [e.audio_filepath for e in read_manifest(a.calib)[::50]][:a.max_calib]
    rows = []
    for fp32 in a.models:
        int8 = fp32.with_name(fp32.name.replace(".onnx", "") + ".int8.onnx")
        t0 = time.perf_counter()
        rep = quantize_model(fp32, calib, int8, a.method, max_utterances=a.max_calib, max_samples=512,
                             threads=a.threads)
        row = {"model": fp32.name, "quantize_s": round(time.perf_counter() - t0, 1),
               "size_fp32_mb": round(fp32.stat().st_size / 1e6, 2), "size_int8_mb": round(int8.stat().st_size / 1e6, 2),
               "size_ratio": round(fp32.stat().st_size / int8.stat().st_size, 2),
               "nodes_int8": rep["nodes_quantized"], "nodes_fp32": rep["nodes_kept_fp32"],
               "calib_samples": rep["calibration"]["samples"], "test_utterances": len(test), "backends": {}}
        for bname in a.backends.split(","):
            ok, why = available(bname)
            if not ok:
                row["backends"][bname] = {"skipped": why}
                continue
            res = {}
            for prec, path in (("fp32", fp32), ("int8", int8)):
                hyps, rtfs = run_backend(bname, path, audio, a.threads)
                res[prec] = {"wer": round(wer(refs, hyps), 4), "rtf_median": round(statistics.median(rtfs), 4)}
            res["delta_wer"] = round(res["int8"]["wer"] - res["fp32"]["wer"], 4)
            res["speedup_int8"] = round(res["fp32"]["rtf_median"] / res["int8"]["rtf_median"], 2)
            row["backends"][bname] = res
            print(f"{fp32.name} {bname}: WER {res['fp32']['wer']:.4f} -> {res['int8']['wer']:.4f}, RTF "
                  f"{res['fp32']['rtf_median']:.4f} -> {res['int8']['rtf_median']:.4f} (x{res['speedup_int8']})",
                  flush=True)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
