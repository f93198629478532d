"""``edgeasr bench``: long-form cost vs audio length (seed 000) and the chunk-size sweep (seed 001).

Long-form: for each model (exported checkpoints, or random-init models at the shipping size when none is given:
timing needs no trained weights) x graph kind (``full``: one call over the whole utterance; ``step``: streamed
chunk by chunk with carried states) x backend, every audio length runs in **its own subprocess** so the peak RSS
(``VmHWM`` of that process) belongs to that cell alone. Inputs are synthetic fbank features of the requested
length (random normal, ``[T, n_mels]`` at the model's frame shift): encoder-only timing, model load and a short
warm-up excluded. MPS = minutes of audio per second of processing (seed 000's unit).

Bounds, so a benchmark never runs away on a shared machine:

- per-cell time cap (``--max-minutes-per-cell``): once a length took longer than the cap, longer lengths of that
  cell are ``skipped: cap``; a length whose time, extrapolated from the previous points, would exceed the cap is
  skipped before it runs; a child still running after ``3 x cap + 120 s`` is killed.
- memory cap (``--max-memory-mb``): the parent watches the child's RSS and kills it above the cap (``killed: memory
  cap``); a length whose extrapolated RSS would exceed the cap is ``skipped: memory cap`` before it runs
  (full attention at 10+ minutes is tens of GB).

The exponent ``b`` of ``time ~ a * length^b`` is fitted per cell (least squares in log-log over the measured
lengths) and also between the last two measured lengths (``b_last``: short lengths are dominated by fixed costs,
so ``b_last`` is closer to the asymptotic order). Linear mixers give b ~ 1; full attention tends to 2.

Chunk sweep (``--test MANIFEST``): for each model whose mixer is in ``--sweep-mixers`` x chunk size x mode x
backend: ``chunk`` mode runs the seed-001 strict-chunk graph (each chunk alone, no state), ``step`` mode streams
the step graph with states carried; WER (greedy CTC, jiwer on normalised text) with its 95 % bootstrap interval
over utterances (``ci95``) and encoder RTF (median over utterances; features precomputed and excluded; every chunk
run one at a time, as a live stream would). Every model after the first gets the paired-bootstrap ΔWER against the
first one at the same mode, backend and chunk (``delta_vs``, ``delta``, ``delta_ci95``, ``significant``: seed 001
compares its attention-free models with the mha baseline this way).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeasr.runtimes.errors import UserError

SCHEMA = "edgeasr.bench/1"
KINDS = ("full", "step")
DEFAULT_LENGTHS = "10s,60s,10m,60m"
DEFAULT_CHUNKS_MS = "160,320,640,1280"
SWEEP_MIXERS = ("mha", "none", "deformable")
SHIP_D_MODEL, SHIP_LAYERS = 144, 6
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


# --- parsing ------------------------------------------------------------------------------------------------------
def parse_length(text: str) -> float:
    """``10s`` / ``1.5m`` / ``10min`` / ``1h`` / ``500ms`` -> seconds (a bare number is seconds)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?\s*", text or "")
    if not m:
        raise UserError(f"bad length {text!r}: use a number with a unit, e.g. 10s, 60s, 10m, 1h")
    seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds <= 0:
        raise UserError(f"bad length {text!r}: must be positive")
    return seconds


def parse_lengths(text: str) -> list[float]:
    items = [t for t in (text or "").split(",") if t.strip()]
    if not items:
        raise UserError("--lengths is empty: give e.g. 10s,60s,10m,60m")
    return sorted(set(parse_length(t) for t in items))


def parse_choices(text: str, allowed, what: str) -> list[str]:
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if items == ["all"]:
        return list(allowed)
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise UserError(f"unknown {what} {', '.join(bad) or '(none)'}; choose {', '.join(allowed)} or all")
    return list(dict.fromkeys(items))


def parse_chunks_ms(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"bad chunk sizes {text!r}: comma-separated milliseconds, e.g. 160,320,640,1280") from None
    if not out or any(c <= 0 for c in out):
        raise UserError(f"bad chunk sizes {text!r}: positive milliseconds, e.g. 160,320,640,1280")
    return out


def label_length(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


# --- models -------------------------------------------------------------------------------------------------------
@dataclass
class BenchModel:
    label: str
    mixer: str
    run_dir: str  # checkpoint directory (the torch backend reads it; exports come from it)
    trained: bool
    source: str
    parameters: int = 0
    causal: bool = True
    direction: str = "bi"
    dirdrop: str = "none"


def random_model(mixer: str, dest: Path, d_model: int = SHIP_D_MODEL, n_layers: int = SHIP_LAYERS,
                 mixer_options: dict | None = None, conv_kernel: int = 15) -> BenchModel:
    """A random-init (seed 0) stream-capable model at the shipping size, saved as a checkpoint in ``dest``."""
    import torch

    from edgeasr.models.checkpoint import save_checkpoint
    from edgeasr.models.config import EncoderConfig
    from edgeasr.models.conformer import Encoder, count_parameters
    from edgeasr.runtimes.features import FbankOptions
    from edgeasr.runtimes.vocab import BLANK_ID, VOCAB

    torch.manual_seed(0)
    cfg = EncoderConfig(mixer=mixer, mixer_options=dict(mixer_options or {}), d_model=d_model, n_layers=n_layers,
                        conv_kernel=conv_kernel, dropout=0.0, direction="bi", causal=True)
    enc = Encoder(cfg).eval()
    save_checkpoint(dest, enc, {"features": FbankOptions().to_dict(), "vocab": list(VOCAB), "blank_id": BLANK_ID,
                                "subsampling": 4, "note": "random init (edgeasr bench): timing only"})
    return BenchModel(f"{mixer} (random init)", mixer, str(dest), False,
                      f"random init, d_model={d_model}, {n_layers} layers", count_parameters(enc), True, "bi")


def trained_model(ref: str) -> BenchModel:
    from edgeasr.models.conformer import count_parameters
    from edgeasr import pretrained
    from edgeasr.pretrained import load_model

    enc, config = load_model(ref)  # one-line UserError when missing
    path = pretrained.resolve_model_dir(ref)
    m = config["model"]
    return BenchModel(ref, m["mixer"], str(path), True, f"checkpoint {path}", count_parameters(enc),
                      bool(m.get("causal", True)), m.get("direction", "bi"), m.get("dirdrop", "none"))


def prepare_models(refs, mixers: list[str], workdir: Path, d_model: int = SHIP_D_MODEL,
                   n_layers: int = SHIP_LAYERS, mixer_options: dict | None = None) -> list[BenchModel]:
    if refs:
        models = [trained_model(r) for r in refs]
        return [m for m in models if m.mixer in mixers] or models
    return [random_model(mx, workdir / "models" / mx, d_model, n_layers, (mixer_options or {}).get(mx))
            for mx in mixers]


BIDIRECTIONAL_MIXERS = ("rwkv", "mamba2")


def export_graph(bm: BenchModel, kind: str, direction: str, chunk_frames: int, out: Path) -> Path:
    """Export ``bm`` as ``kind`` into ``out`` (cached by name within one bench directory)."""
    from edgeasr.exporters.onnx_export import ExportError, export
    from edgeasr.runtimes.files import sha256_file
    from edgeasr.models.checkpoint import WEIGHTS, load_checkpoint

    if out.is_file():
        return out
    enc, config = load_checkpoint(Path(bm.run_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        export(enc, config, out, kind, direction, chunk_frames, verify=False,
               source_sha256=sha256_file(Path(bm.run_dir) / WEIGHTS))
    except ExportError as e:
        raise UserError(f"{bm.label}: cannot export {kind} ({e})") from None
    return out


def full_direction(bm: BenchModel, wanted: str) -> str:
    return wanted if wanted in ("l2r", "bi") else "bi"


# --- one long-form cell (child process) ---------------------------------------------------------------------------
def _proc_status(pid: int | str = "self") -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS", "VmHWM")):
                    k, v = line.split(":")
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def _make_backend(spec: dict):
    from edgeasr.runtimes.backends import get_backend

    opts = {}
    if spec["backend"] == "torch":
        opts = {"kind": spec["kind"], "direction": spec.get("direction"), "chunk_frames": spec["chunk_frames"]}
    return get_backend(spec["backend"], spec["model"], threads=spec["threads"], **opts)


def _run_full(backend, x: np.ndarray) -> int:
    out = backend.infer({"x": x[None], "x_lens": np.array([len(x)], np.int64)})
    return int(out["out_lens"][0])


def _run_step(backend, x: np.ndarray, c: int, mult: int = 4, total: int | None = None) -> int:
    """Stream ``total`` frames (default ``len(x)``) chunk by chunk; with ``total > len(x)`` the chunks cycle
    through ``x`` (a pool of synthetic chunks), so a 60-minute stream never holds 60 minutes of features."""
    handle = backend.init_state(1)
    frames = 0
    n = len(x) if total is None else int(total)
    pool = len(x) - len(x) % c
    for j, i in enumerate(range(0, n - n % c, c)):
        o = (j * c) % pool
        lp, handle = backend.step(x[None, o:o + c], handle)
        frames += lp.shape[1]
    rest = n % c
    if rest:
        pad = -rest % mult
        tail = np.concatenate([x[:rest], np.zeros((pad, x.shape[1]), np.float32)])
        lp, handle = backend.step(tail[None], handle)
        frames += lp.shape[1]
    backend.release_state(handle)
    return frames


def run_cell(spec: dict) -> dict:
    """Time one (model, kind, backend, length) in this process; returns timing and memory numbers."""
    t0 = time.perf_counter()
    backend = _make_backend(spec).activate()
    load_s = time.perf_counter() - t0
    meta = backend.meta
    fb = meta["fbank"]
    frames_per_s = 1000.0 / float(fb.get("frame_shift_ms", 10.0))
    F = int(fb["num_bins"])
    T = int(round(spec["seconds"] * frames_per_s))
    c = int(spec["chunk_frames"])
    rng = np.random.default_rng(0)
    if spec["kind"] == "full":
        run = lambda x: _run_full(backend, x)  # noqa: E731
        x = rng.standard_normal((T, F), dtype=np.float32)  # the whole utterance is one input
        run(x[:min(T, 2 * c + 8)])  # warm-up: first-call allocations
    else:  # a stream holds one chunk at a time: cycle through a pool of 64 synthetic chunks
        x = rng.standard_normal((min(T, 64 * c) // c * c or T, F), dtype=np.float32)
        run = lambda x: _run_step(backend, x, c, total=T)  # noqa: E731
        _run_step(backend, x, c, total=min(T, 2 * c + 8))  # warm-up
    rss_ready = _proc_status().get("VmRSS", 0)
    times = []
    while True:  # short inputs repeat (median of up to 5 runs within ~2 s): first calls on a new shape are noisy
        t1 = time.perf_counter()
        out_frames = run(x)
        times.append(time.perf_counter() - t1)
        if len(times) >= 5 or sum(times) > 2.0:
            break
    elapsed = statistics.median(times)
    st = _proc_status()
    backend.deactivate()
    return {"time_s": elapsed, "runs": len(times), "load_s": load_s, "out_frames": out_frames, "frames": T,
            "ready_rss_mb": rss_ready / 2**20, "peak_rss_mb": st.get("VmHWM", 0) / 2**20}


def _child_main(arg: str) -> None:
    spec = json.loads(arg)
    try:
        result = run_cell(spec)
    except Exception as e:  # reported by the parent as a failed cell, one line
        msg = " ".join(str(e).split())
        msg = msg if len(msg) <= 360 else msg[:120] + " ... " + msg[-220:]  # keep the cause at the end
        result = {"error": f"{type(e).__name__}: {msg}"}
    sys.stdout.write("EDGEASR_BENCH " + json.dumps(result) + "\n")


def measure(spec: dict, mem_cap_mb: float, hard_timeout_s: float) -> dict:
    """Run one cell in a subprocess, watching its RSS; returns the child's numbers or a failure status."""
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "edgeasr.evaluation.bench", json.dumps(spec)], stdout=out,
                                stderr=err, env=env, cwd=root)
        t0, killed, max_rss = time.monotonic(), None, 0
        while proc.poll() is None:
            rss = _proc_status(proc.pid).get("VmRSS", 0) / 2**20
            max_rss = max(max_rss, rss)
            if rss > mem_cap_mb:
                killed = f"killed: memory cap (RSS {rss:.0f} MB > {mem_cap_mb:.0f} MB)"
            elif time.monotonic() - t0 > hard_timeout_s:
                killed = f"killed: cap (still running after {hard_timeout_s:.0f} s)"
            if killed:
                proc.kill()
                proc.wait()
                return {"status": killed, "observed_rss_mb": round(max_rss, 1)}
            time.sleep(0.05)
        out.seek(0)
        text = out.read().decode(errors="replace")
        err.seek(0)
        tail = " ".join(err.read().decode(errors="replace").split())[-300:]
    m = re.search(r"^EDGEASR_BENCH (.*)$", text, re.M)
    if not m:
        return {"status": f"failed: exit {proc.returncode} ({tail or 'no output'})"}
    res = json.loads(m.group(1))
    if "error" in res:
        return {"status": f"failed: {res['error']}"}
    return {"status": "ok", **res}


# --- fitting ------------------------------------------------------------------------------------------------------
def fit_exponent(lengths, times) -> float | None:
    pts = [(math.log(a), math.log(b)) for a, b in zip(lengths, times) if a > 0 and b and b > 0]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return None
    xs, ys = zip(*pts)
    return float(np.polyfit(xs, ys, 1)[0])


def _extrapolate(points: list[dict], key: str, seconds: float, floor: float = 1.0) -> float | None:
    ok = [p for p in points if p["status"] == "ok" and p.get(key)]
    if not ok:
        return None
    last = ok[-1]
    b = fit_exponent([p["seconds"] for p in ok[-2:]], [p[key] for p in ok[-2:]]) if len(ok) >= 2 else None
    b = max(floor, b if b is not None else floor)
    return last[key] * (seconds / last["seconds"]) ** b


# --- long-form driver ---------------------------------------------------------------------------------------------
@dataclass
class BenchOptions:
    lengths: list[float]
    kinds: list[str]
    backends: list[str]
    threads: int = 1
    cap_s: float = 120.0
    mem_cap_mb: float = 6000.0
    chunk_frames: int = 32
    direction: str = "bi"
    say: object = None
    bar: object = None  # an edgeasr.progress bar


def longform(models: list[BenchModel], opts: BenchOptions, workdir: Path) -> list[dict]:
    from edgeasr.progress import progress_bar
    from edgeasr.runtimes.backends import available

    say = opts.say or (lambda *_: None)
    bar = opts.bar or progress_bar(quiet=True)
    # in seconds of audio: a length's cost grows with it (a skipped length counts as done)
    task = bar.add_task("long-form", total=len(models) * len(opts.kinds) * len(opts.backends) * sum(opts.lengths),
                        unit="audio s")
    cells = []
    for bm in models:
        for kind in opts.kinds:
            direction = "l2r" if kind == "step" else full_direction(bm, opts.direction)
            graph = None
            for backend in opts.backends:
                cell = {"model": bm.label, "mixer": bm.mixer, "trained": bm.trained, "kind": kind,
                        "backend": backend, "direction": direction,
                        "chunk_frames": opts.chunk_frames if kind == "step" else None, "points": []}
                cells.append(cell)
                ok, why = available(backend)
                reason = None
                if not ok:
                    reason = f"skipped: backend unavailable ({why})"
                elif kind == "step" and not bm.causal:
                    reason = "skipped: not stream-capable (trained with causal=False)"
                if reason is None and backend != "torch" and graph is None:
                    graph = export_graph(bm, kind, direction, opts.chunk_frames,
                                         workdir / "onnx" / f"{Path(bm.run_dir).name}.{kind}.{direction}.onnx")
                model_ref = bm.run_dir if backend == "torch" else str(graph)
                stop = None
                for seconds in opts.lengths:
                    point = {"seconds": seconds, "length": label_length(seconds)}
                    cell["points"].append(point)
                    bar.update(task, description=f"{bm.mixer} {kind} {backend} {label_length(seconds)}")
                    if reason or stop:
                        point["status"] = reason or stop
                        bar.advance(task, seconds)
                        continue
                    pred_t = _extrapolate(cell["points"][:-1], "time_s", seconds)
                    pred_m = _extrapolate(cell["points"][:-1], "peak_rss_mb", seconds, floor=0.0)
                    if pred_t is not None and pred_t > opts.cap_s:
                        point["status"] = stop = f"skipped: cap (predicted {pred_t:.0f} s > {opts.cap_s:g} s)"
                        bar.advance(task, seconds)
                        continue
                    if pred_m is not None and pred_m > opts.mem_cap_mb:
                        point["status"] = stop = (f"skipped: memory cap (predicted {pred_m:.0f} MB > "
                                                  f"{opts.mem_cap_mb:.0f} MB)")
                        bar.advance(task, seconds)
                        continue
                    spec = {"backend": backend, "model": model_ref, "kind": kind, "seconds": seconds,
                            "threads": opts.threads, "chunk_frames": opts.chunk_frames, "direction": direction}
                    res = measure(spec, opts.mem_cap_mb, 3 * opts.cap_s + 120)
                    bar.advance(task, seconds)
                    point.update(res)
                    if res["status"] == "ok":
                        point["mps"] = (seconds / 60.0) / res["time_s"] if res["time_s"] > 0 else None
                        point["rtf"] = res["time_s"] / seconds
                        if res["time_s"] > opts.cap_s:
                            stop = f"skipped: cap (previous length took {res['time_s']:.0f} s > {opts.cap_s:g} s)"
                    else:
                        stop = f"skipped: after {label_length(seconds)} {res['status'].split(':')[0]}"
                    say(f"{bm.mixer:10s} {kind:4s} {backend:8s} {label_length(seconds):>5s}: " +
                        (f"{res['time_s']:.2f} s, {point['mps']:.1f} MPS, peak RSS {res['peak_rss_mb']:.0f} MB"
                         if res["status"] == "ok" else res["status"]))
                okp = [p for p in cell["points"] if p.get("status") == "ok"]
                cell["exponent"] = fit_exponent([p["seconds"] for p in okp], [p["time_s"] for p in okp])
                cell["exponent_last"] = fit_exponent([p["seconds"] for p in okp[-2:]],
                                                     [p["time_s"] for p in okp[-2:]])
                if okp:
                    say(f"{bm.mixer:10s} {kind:4s} {backend:8s} exponent b={_fmt(cell['exponent'])} "
                        f"(last two lengths {_fmt(cell['exponent_last'])})")
    return cells


# --- chunk-size sweep ---------------------------------------------------------------------------------------------
def _decode(lp: np.ndarray, vocab, blank_id: int) -> str:
    from edgeasr.runtimes.session import CtcStreamDecoder

    d = CtcStreamDecoder(vocab, blank_id)
    d.accept(lp)
    return d.text


def _chunk_logprobs(backend, f: np.ndarray, c: int) -> np.ndarray:
    """Strict chunk mode: every chunk alone (the last one shorter), one at a time as a live stream would."""
    parts = [backend.infer({"x": np.ascontiguousarray(f[i:i + c][None])})["logprobs"][0]
             for i in range(0, len(f), c)]
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


def _step_logprobs(backend, f: np.ndarray, c: int, mult: int = 4) -> np.ndarray:
    handle = backend.init_state(1)
    parts = []
    n = len(f)
    for i in range(0, n - n % c, c):
        lp, handle = backend.step(f[None, i:i + c], handle)
        parts.append(lp[0])
    if n % c:
        rest = f[n - n % c:]
        pad = -len(rest) % mult
        if pad:
            rest = np.concatenate([rest, np.zeros((pad, f.shape[1]), np.float32)])
        lp, handle = backend.step(rest[None], handle)
        parts.append(lp[0])
    backend.release_state(handle)
    return np.concatenate(parts)


def load_test_features(manifest: Path, limit: int, fbank: dict) -> list[tuple[np.ndarray, str, float]]:
    """Up to ``limit`` utterances spread evenly over the manifest: (fbank [T,F], reference, seconds)."""
    from edgeasr.runtimes.audio import load_audio
    from edgeasr.runtimes.features import FbankOptions, compute_fbank
    from edgeasr.data.manifest import read_manifest

    entries = list(read_manifest(manifest))
    if not entries:
        raise UserError(f"{manifest}: empty test manifest")
    if limit and len(entries) > limit:
        entries = [entries[round(i * (len(entries) - 1) / (limit - 1))] for i in range(limit)] if limit > 1 \
            else entries[:1]
    opts = FbankOptions.from_dict(fbank)
    out = []
    for e in entries:
        samples, _ = load_audio(str(e.audio_filepath), opts.sample_rate)
        out.append((compute_fbank(samples, opts), e.text, len(samples) / opts.sample_rate))
    return out


def sweep(models: list[BenchModel], chunks_ms: list[int], backends: list[str], test: Path, limit: int,
          workdir: Path, threads: int = 1, say=None, modes: tuple[str, ...] | None = None, bar=None) -> list[dict]:
    """``modes``: only these of ``chunk`` (strict chunks), ``step`` and ``chunk-bi`` (default: every one the
    model's mixer has). ``bar``: an ``edgeasr.progress`` bar, advanced per utterance decoded."""
    from edgeasr.models.checkpoint import read_config
    from edgeasr.progress import progress_bar
    from edgeasr.runtimes.backends import available, get_backend
    from edgeasr.evaluation.bootstrap import delta_summary, summary, word_errors

    def modes_of(bm: BenchModel) -> list[str]:
        # chunk-bi: stateful L2R + R2L within each chunk, a step graph exported per chunk size (bidirectional only)
        own = ("chunk", "step", "chunk-bi") if bm.mixer in BIDIRECTIONAL_MIXERS else ("chunk", "step")
        return [m for m in own if modes is None or m in modes]

    say = say or (lambda *_: None)
    bar = bar or progress_bar(quiet=True)
    n_rows = sum(len(modes_of(bm)) for bm in models) * len(backends) * len(chunks_ms)
    task = bar.add_task("chunk sweep: test features", total=None, unit="utts")
    rows = []
    pairs: dict[int, object] = {}  # id(row) -> per-utterance (errors, words), for the paired ΔWER
    feats_cache: dict[str, list] = {}
    for bm in models:
        config = read_config(Path(bm.run_dir))
        key = json.dumps(config["features"], sort_keys=True)
        if key not in feats_cache:
            feats_cache[key] = load_test_features(test, limit, config["features"])
        utts = feats_cache[key]
        bar.update(task, total=n_rows * len(utts))
        shift = float(config["features"].get("frame_shift_ms", 10.0))
        chunk_dir = bm.direction if bm.direction in ("l2r", "bi") else "l2r"
        for mode in modes_of(bm):
            direction = {"step": "l2r", "chunk-bi": "chunk-bi"}.get(mode, chunk_dir)
            for backend_name in backends:
                base = {"model": bm.label, "mixer": bm.mixer, "trained": bm.trained, "mode": mode,
                        "backend": backend_name, "direction": direction, "utterances": len(utts)}
                ok, why = available(backend_name)
                reason = None if ok else f"skipped: backend unavailable ({why})"
                if reason is None and mode in ("step", "chunk-bi") and not bm.causal:
                    reason = "skipped: not stream-capable (trained with causal=False)"
                if reason:
                    rows += [{**base, "chunk_ms": ms, "status": reason} for ms in chunks_ms]
                    bar.advance(task, len(chunks_ms) * len(utts))
                    continue
                def open_backend(c: int):
                    kind = "step" if mode == "chunk-bi" else mode
                    if backend_name == "torch":
                        return get_backend("torch", bm.run_dir, threads=threads, kind=kind, direction=direction,
                                           chunk_frames=c).activate()
                    suffix = f".{c}f" if mode == "chunk-bi" else ""  # a chunk-bi graph runs only its own chunk
                    graph = export_graph(bm, kind, direction, c, workdir / "onnx" /
                                         f"{Path(bm.run_dir).name}.{mode}.{direction}{suffix}.onnx")
                    return get_backend(backend_name, graph, threads=threads).activate()

                backend = None if mode == "chunk-bi" else open_backend(32)
                for ms in chunks_ms:
                    c = max(4, int(round(ms / shift / 4)) * 4)
                    bar.update(task, description=f"chunk sweep: {bm.mixer} {mode} {backend_name} {ms} ms")
                    if mode == "chunk-bi":
                        backend = open_backend(c)
                    meta = backend.meta
                    fn = _chunk_logprobs if mode == "chunk" else _step_logprobs
                    fn(backend, utts[0][0][: 2 * c], c)  # warm-up
                    hyps, rtfs = [], []
                    for f, _, dur in utts:
                        t0 = time.perf_counter()
                        lp = fn(backend, f, c)
                        rtfs.append((time.perf_counter() - t0) / dur)
                        hyps.append(_decode(lp, meta["vocab"], int(meta["blank_id"])))
                        bar.advance(task)
                    p = word_errors([u[1] for u in utts], hyps)
                    w = summary(p)
                    row = {**base, "chunk_ms": ms, "chunk_frames": c, "status": "ok",
                           "wer": w["wer"],
                           "rtf_median": statistics.median(rtfs),
                           "rtf_p90": float(np.percentile(rtfs, 90)), "ci95": w["ci95"]}
                    first = next((r for r in rows if r["status"] == "ok" and r["model"] != row["model"] and
                                  (r["mode"], r["backend"], r["chunk_ms"]) == (mode, backend_name, ms)), None)
                    if first is not None:  # paired with the first model at the same mode/backend/chunk
                        row.update(delta_vs=first["model"], **delta_summary(pairs[id(first)], p))
                    pairs[id(row)] = p
                    rows.append(row)
                    say(f"sweep {bm.mixer:10s} {mode:5s} {backend_name:8s} {ms:5d} ms: WER {row['wer']:.2f}% "
                        f"RTF {row['rtf_median']:.4f}" + ("" if bm.trained else " (random init: WER meaningless)"))
                    if mode == "chunk-bi":
                        backend.deactivate()
                if mode != "chunk-bi":
                    backend.deactivate()
    return rows


# --- reports ------------------------------------------------------------------------------------------------------
def _fmt(v, nd=2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _ci(ci, signed: bool = False) -> str:
    if not ci:
        return "-"
    f = "+.2f" if signed else ".1f"
    return f"{ci[0]:{f}}, {ci[1]:{f}}"


def _host() -> dict:
    return {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def _point_cell(p: dict) -> str:
    if p.get("status") == "ok":
        return f"{p['mps']:.1f} MPS · {p['peak_rss_mb']:.0f} MB"
    return p.get("status", "-")


def _time_cell(p: dict) -> str:
    if p.get("status") == "ok":
        return f"{p['time_s']:.3g} s · RTF {p['time_s'] / p['seconds']:.2g}"
    return "-"


def tables(report: dict) -> list[dict]:
    """The report's tables as data (``title``, ``note``, ``head``, ``rows`` of strings, ``level`` 2 opens a
    section): bench.md and bench.html show the same ones."""
    out = []
    lf = report.get("longform")
    if lf:
        lengths = lf["lengths"]
        out.append({"level": 2, "title": "Long-form: MPS (minutes of audio per second) and peak RSS per audio length",
                    "note": f"Per-cell time cap {lf['cap_s']:g} s, memory cap {lf['mem_cap_mb']:.0f} MB. b: fitted "
                            "exponent of time ~ length^b (all measured lengths); b last: between the last two.",
                    "head": ["mixer", "kind", "backend", "direction", *lengths, "b", "b last"],
                    "rows": [[c["mixer"], c["kind"], c["backend"], c["direction"],
                              *[_point_cell(p) for p in c["points"]], _fmt(c["exponent"]),
                              _fmt(c["exponent_last"])] for c in lf["cells"]]})
        out.append({"level": 3, "title": "Time and RTF per length", "note": "Encoder time of the whole length "
                    "(median of the runs) and RTF = time / audio length.",
                    "head": ["mixer", "kind", "backend", *lengths],
                    "rows": [[c["mixer"], c["kind"], c["backend"], *[_time_cell(p) for p in c["points"]]]
                             for c in lf["cells"]]})
    sw = report.get("sweep")
    if sw:
        chunks = sw["chunks_ms"]
        groups: dict[tuple, dict] = {}
        for r in sw["rows"]:
            groups.setdefault((r["model"], r["mode"], r["backend"]), {})[r["chunk_ms"]] = r
        rows = []
        for (model, mode, backend), byc in groups.items():
            cells = []
            for c in chunks:
                r = byc.get(c)
                cells.append("-" if r is None else r["status"] if r["status"] != "ok"
                             else f"{r['wer']:.2f} [{_ci(r.get('ci95'))}] / {r['rtf_median']:.4f}")
            rows.append([model, mode, backend, *cells])
        note = (f"Test set: {sw['test']} ({sw['utterances']} utterances). chunk = strict chunk graph (each chunk "
                "alone, no state); step = stateful streaming; chunk-bi = stateful L2R + R2L within each chunk "
                "(bidirectional mixers). Features precomputed, RTF = encoder time / audio. CI: bootstrap over "
                "utterances; ΔWER: paired bootstrap against the first model at the same mode, backend and chunk "
                "(* = significant: its 95 % interval excludes 0).")
        if any(not r.get("trained", True) for r in sw["rows"]):
            note += " Random-init models: their WER is meaningless (only the RTF is informative)."
        out.append({"level": 2, "title": "Chunk-size sweep (seed 001): WER % [95 % CI] / encoder RTF (median)",
                    "note": note, "head": ["model", "mode", "backend", *[f"{c} ms" for c in chunks]], "rows": rows})
        deltas = [r for r in sw["rows"] if r.get("status") == "ok" and r.get("delta_ci95")]
        if deltas:
            dgroups: dict[tuple, dict] = {}
            for r in deltas:
                dgroups.setdefault((r["model"], r["delta_vs"], r["mode"], r["backend"]), {})[r["chunk_ms"]] = r
            out.append({"level": 3, "title": "ΔWER (points) against the first model, paired 95 % CI", "note": "",
                        "head": ["model", "vs", "mode", "backend", *[f"{c} ms" for c in chunks]],
                        "rows": [[*key, *["-" if c not in byc else f"{byc[c]['delta']:+.2f} "
                                          f"[{_ci(byc[c]['delta_ci95'], True)}]" + ("*" if byc[c]["significant"]
                                                                                   else "") for c in chunks]]
                                 for key, byc in dgroups.items()]})
    return out


def markdown(report: dict) -> str:
    lines = ["# edgeasr bench", "",
             f"{report['created']} · {report['host']['cpus']} CPUs · threads {report['threads']} · "
             f"load average at start {report['host']['loadavg_at_start']}", ""]
    lines += [f"Models: {report['models_note']}", "", f"Inputs: {report['inputs_note']}", ""]
    for t in tables(report):
        lines += [f"{'#' * t['level']} {t['title']}", ""] + ([t["note"], ""] if t["note"] else [])
        lines += ["| " + " | ".join(t["head"]) + " |", "|" + "---|" * len(t["head"])]
        lines += ["| " + " | ".join(r) + " |" for r in t["rows"]] + [""]
    return "\n".join(lines) + "\n"


def html(report: dict) -> str:
    from html import escape

    from edgeasr.evaluation.plots import bench_figures
    from edgeasr.evaluation.report_html import ERROR_GUARD, PAGE_CHECK, PAGE_CSS, plots_html

    figures = bench_figures(report)  # None without matplotlib
    parts = []
    for t in tables(report):
        head = "".join(f'<th class="l">{escape(h)}</th>' for h in t["head"])
        body = "".join("<tr>" + "".join(f'<td class="l">{escape(v)}</td>' for v in r) + "</tr>" for r in t["rows"])
        parts.append(f"<h{t['level']}>{escape(t['title'])}</h{t['level']}>" +
                     (f"<p>{escape(t['note'])}</p>" if t["note"] else "") +
                     f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
                     "</div>")
    data = json.dumps(report).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgeasr bench</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{ERROR_GUARD}<style>{PAGE_CSS}</style></head>
<body data-plots="0" data-plots-expected="{len(figures or [])}">
<h1>edgeasr bench</h1>
<p>{escape(report['created'])} · {report['host']['cpus']} CPUs · threads {report['threads']} · load average at start
{escape(str(report['host']['loadavg_at_start']))}</p>
<p>Models: {escape(report['models_note'])}</p><p>Inputs: {escape(report['inputs_note'])}</p>
<h2>Plots</h2>
{plots_html(figures, wide=True)}
{''.join(parts)}
<pre id="page-errors"></pre>
<script type="application/json" id="report">{data}</script>
{PAGE_CHECK}
</body></html>
"""


def write_reports(report: dict, out: Path, stem: str = "bench") -> dict[str, Path]:
    from edgeasr.runtimes.files import write_report_files

    return write_report_files(out, stem, {"json": json.dumps(report, indent=2) + "\n", "md": markdown(report),
                                          "html": html(report)})


def bench(refs, mixers: list[str], lengths: list[float], backends: list[str], kinds: list[str], out: Path,
          threads: int = 1, cap_s: float = 120.0, mem_cap_mb: float = 6000.0, chunk_frames: int = 32,
          direction: str = "bi", test: Path | None = None, chunks_ms: list[int] | None = None,
          sweep_mixers: list[str] | None = None, sweep_limit: int = 100, sweep_backends: list[str] | None = None,
          longform_on: bool = True, d_model: int = SHIP_D_MODEL, n_layers: int = SHIP_LAYERS,
          mixer_options: dict | None = None, say=None, bar=None) -> tuple[dict, dict[str, Path]]:
    """``bar``: an ``edgeasr.progress`` bar for the long-form lengths and the sweep's utterances."""
    from edgeasr.runtimes.files import check_out_dir

    out = check_out_dir(out, [*(refs or []), test])
    if test is not None and not Path(test).is_file():
        raise UserError(f"{test}: test manifest not found")
    if chunk_frames <= 0 or chunk_frames % 4:
        raise UserError(f"--chunk-frames must be a positive multiple of 4, got {chunk_frames}")
    out.mkdir(parents=True, exist_ok=True)  # the exports timed below are written under it
    models = prepare_models(refs, mixers, out, d_model, n_layers, mixer_options)
    trained = [m for m in models if m.trained]
    models_note = (f"trained checkpoints: {', '.join(m.source for m in trained)}" if trained else
                   f"random-init models (seed 0) at d_model={d_model}, {n_layers} layers, causal: timing needs no "
                   "trained weights (WER of these models is meaningless)")
    report = {"schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "host": _host(), "threads": threads, "models": [asdict(m) for m in models],
              "models_note": models_note,
              "inputs_note": "long-form inputs are synthetic fbank features (random normal, [T, n_mels] at the "
                             "model's frame shift) of the stated length: encoder-only timing, model load and a short "
                             "warm-up excluded (inputs under ~2 s of compute: median of up to 5 runs); each length runs in its own subprocess (peak RSS = that process's "
                             "VmHWM; full graphs hold the whole utterance's features, 115 MB at 60 min, step graphs only a pool of 64 chunks)."}
    if longform_on:
        opts = BenchOptions(lengths, kinds, backends, threads, cap_s, mem_cap_mb, chunk_frames, direction, say, bar)
        report["longform"] = {"lengths": [label_length(s) for s in lengths], "lengths_s": lengths,
                              "cap_s": cap_s, "mem_cap_mb": mem_cap_mb, "chunk_frames": chunk_frames,
                              "cells": longform(models, opts, out)}
    if test is not None:
        sweep_mixers = sweep_mixers or list(SWEEP_MIXERS)
        chosen = [m for m in models if m.mixer in sweep_mixers]
        chunks_ms = chunks_ms or parse_chunks_ms(DEFAULT_CHUNKS_MS)
        report["sweep"] = {"test": str(test), "chunks_ms": chunks_ms, "mixers": sweep_mixers,
                           "utterances": None, "rows": []}
        if chosen:
            rows = sweep(chosen, chunks_ms, sweep_backends or backends[:1], Path(test), sweep_limit, out, threads,
                         say, bar=bar)
            report["sweep"]["rows"] = rows
            report["sweep"]["utterances"] = next((r["utterances"] for r in rows), None)
        missing = [mx for mx in sweep_mixers if mx not in {m.mixer for m in chosen}]
        report["sweep"]["not_run"] = [f"{mx}: no model given" for mx in missing]
    return report, write_reports(report, out)


if __name__ == "__main__":  # one long-form cell in a clean process (see ``measure``)
    _child_main(sys.argv[1])
