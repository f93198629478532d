"""RWKV-6 block length of the chunked WKV form (``chunk_len``): each candidate against the default, timed in one run.

The chunked form is exact for any block length (checked here: log-probs of every candidate against the default's),
so the length is purely a speed knob. Per candidate, timed in turns with the default (so drift hits all alike),
median of the repeats:

- ``train``: one fwd+bwd of the CTC loss in train mode (torch, the shipped flagship's size) at a few batch shapes,
  including the 40k-frame batches the flagship fine-tunes use;
- ``infer``: a torch full forward (bi) of one long and one batched input;
- ``ort step``: one call of the l2r step graph on the ORT backend (1 thread, states in I/O bindings as a stream) with
  a 32-frame chunk, the demo's.

Prints each time and the ratio default / candidate (> 1: the candidate is faster). Machines here are shared and
noisy: compare ratios from one run, not times across runs.

Usage: python benchmarks/rwkv_chunk_bench.py [--model default|RUN] [--lengths 4,8,16,32] [--threads 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeasr.exporters.onnx_export import build_onnx  # noqa: E402
from edgeasr.models.mixers.rwkv import DEFAULT_CHUNK_LEN, RWKV6TimeMix  # noqa: E402
from edgeasr.pretrained import load_model  # noqa: E402

TRAIN_SHAPES = ((8, 200), (80, 500), (40, 1000))  # (utterances, fbank frames): 80 x 500 = a 40k-frame batch
INFER_SHAPES = ((1, 6000), (16, 800))
STEP_FRAMES = 32


def set_chunk_len(model, n: int) -> None:
    for m in model.modules():
        if isinstance(m, RWKV6TimeMix):
            m.chunk_len = n


def train_step(model, x, lens, targets, tlens):
    model.train()
    lp, ol, _ = model(x, lens)
    loss = F.ctc_loss(lp.transpose(0, 1).float(), targets, ol, tlens, blank=0, zero_infinity=True)
    model.zero_grad(set_to_none=True)
    loss.backward()


def infer(model, x, lens):
    model.eval()
    with torch.no_grad():
        return model(x, lens)[0]


def ort_step_session(model, config, tmp: Path):
    """The deployment path: the l2r step graph on the ORT backend (1 thread), from its metadata's initial state."""
    from edgeasr.runtimes.backends import get_backend

    model.set_direction("l2r")
    onx, _ = build_onnx(model, config, "step", "l2r", STEP_FRAMES)
    path = tmp / f"step-{len(list(tmp.iterdir()))}.onnx"
    path.write_bytes(onx.SerializeToString())
    backend = get_backend("ort", path, threads=1).activate()
    handle = backend.init_state(1)
    x = np.random.default_rng(0).standard_normal((1, STEP_FRAMES, model.cfg.n_mels)).astype(np.float32)
    return lambda: backend.step(x, handle)


def round_robin(model, fns: dict, repeats: int, calls: int = 1) -> dict:
    """Median seconds per call of each block length's ``fn``, timed in turns (n1, n2, ..., n1, n2, ...) so a
    shared machine's drift hits every candidate alike; one untimed warm-up round first."""
    times = {n: [] for n in fns}
    for r in range(repeats + 1):
        for n, fn in fns.items():
            set_chunk_len(model, n)
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            if r:
                times[n].append((time.perf_counter() - t) / calls)
    return {n: statistics.median(v) for n, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--lengths", default="4,8,16,32", help="block lengths to compare with the default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, config = load_model(args.model)
    lengths = [int(v) for v in args.lengths.split(",") if int(v) != DEFAULT_CHUNK_LEN]
    n_mels = model.cfg.n_mels

    # exactness first: a block length that changed the output would not be a speed knob
    x = torch.randn(3, 700, n_mels)
    lens = torch.tensor([700, 333, 101])
    model.set_direction("bi")
    set_chunk_len(model, DEFAULT_CHUNK_LEN)
    ref = infer(model, x, lens)
    for n in lengths:
        set_chunk_len(model, n)
        err = (infer(model, x, lens) - ref).abs().max().item()
        print(f"chunk_len {n}: max |log-prob - default's| = {err:.2e}")
        assert err < 1e-3, f"chunk_len {n} changes the output by {err}"

    cases = []
    for b, t in TRAIN_SHAPES:
        xs, ls = torch.randn(b, t, n_mels), torch.full((b,), t)
        tg, tl = torch.randint(1, 29, (b, t // 10)), torch.full((b,), t // 10)
        cases.append((f"train B={b} T={t}", lambda xs=xs, ls=ls, tg=tg, tl=tl: train_step(model, xs, ls, tg, tl)))
    for b, t in INFER_SHAPES:
        xs, ls = torch.randn(b, t, n_mels), torch.full((b,), t)
        cases.append((f"infer bi B={b} T={t}", lambda xs=xs, ls=ls: infer(model, xs, ls)))

    header = " ".join(f"{'L=' + str(n):>16}" for n in lengths)
    print(f"\n{'case':24} {'default ' + str(DEFAULT_CHUNK_LEN):>12} {header}")
    for name, fn in cases:
        model.set_direction("bi")
        times = round_robin(model, {n: fn for n in [DEFAULT_CHUNK_LEN, *lengths]}, args.repeats)
        base = times[DEFAULT_CHUNK_LEN]
        print(f"{name:24} {base:11.3f}s " + " ".join(f"{times[n]:8.3f}s {base / times[n]:5.2f}x" for n in lengths))
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for n in [DEFAULT_CHUNK_LEN, *lengths]:  # the block length is baked into each exported graph
            set_chunk_len(model, n)
            sessions[n] = ort_step_session(model, config, Path(tmp))
        step_times = round_robin(model, sessions, args.repeats * 3, calls=50)
    base = step_times[DEFAULT_CHUNK_LEN]
    print(f"{'ort step ' + str(STEP_FRAMES) + ' frames':24} {base * 1e3:10.2f}ms "
          + " ".join(f"{step_times[n] * 1e3:7.2f}ms {base / step_times[n]:5.2f}x" for n in lengths))
    print("\nratio = default time / candidate time (> 1: the candidate is faster)")


if __name__ == "__main__":
    main()
