"""Parity report (issue 6): every exported model × backend × precision × mode against the torch fp32 reference.

What a cell is: one ONNX file (its ``graph_kind`` is the mode: ``step`` streams chunk by chunk with the states
carried, ``full``/``chunk`` decode whole utterances) on one backend at one precision, decoding every utterance of
the test manifest with greedy CTC. The reference cells run the checkpoint the ONNX came from through
``edgeasr.evaluation.torch_backend.TorchBackend`` with the same graph kind, direction and chunk size, so both sides see the
same fbank frames and the same chunk boundaries.

Measured per cell (DESIGN.md §7):

- WER/CER (jiwer, normalised text), ΔWER against the reference, hypothesis agreement (identical normalised
  transcripts, %). The WER's 95 % bootstrap interval over utterances (``wer_ci95``) and the paired-bootstrap
  interval of ΔWER (``wer_delta_ci95``, ``edgeasr.evaluation.bootstrap``); ``significant`` is false when that
  interval holds 0.
- Output error against the reference: max abs, p99 abs and cosine (worst utterance) of the **logprobs** — the one
  tensor every graph kind returns (full graphs have no ``encoder_out``; ORT step sessions do not bind it).
  Step mode also compares the final states after the last chunk: max abs over every state, and relative to the
  largest |reference state| (WKV/SSM states grow with the utterance, so absolute figures alone mislead).
- RTF = processing seconds / audio seconds, per utterance, audio loading and model load excluded: end to end
  (features + encoder + decode) and encoder only; median and p90. Chunk latency (step): wall time of each
  ``accept_waveform`` call that ran the model, fed chunk-sized pieces, p50/p95/p99. First-partial latency (step):
  audio seconds fed until the first non-empty partial + the processing time of that call (what a live user waits
  from the start of the utterance when audio arrives in real time).
- Peak RSS, measured honestly per cell: each cell runs in a fresh Python process (``python -m edgeasr.evaluation.parity
  --cell``) that imports only what that backend needs (ONNX cells never import torch) and reports
  the VmHWM high-water mark of its own address space (``/proc/self/status``) at its end: interpreter, backend
  libraries, model, buffers, the preloaded test audio. Not ``ru_maxrss``, which Linux carries over exec from the
  forked parent (that would charge every cell the parent's torch); ``base_rss_mb`` is VmRSS just before the model
  loads, so ``peak - base`` is the model's own cost. With ``isolate=False`` (tests) cells share one process and
  the RSS fields are marked ``"rss_scope": "shared process"``.
- File size and load time (``activate()``: session creation / compile, incl. OpenVINO's stateful compile).

Cells whose backend is not available here are ``skipped`` with the reason; a cell that fails to run is ``error``
with its one-line reason (both listed, never silently absent). Thresholds (``max_wer_delta``, ``max_err``) are
checked on every measured non-reference cell; ``report["failures"]`` names each failing cell. Suspicious cells
(transcripts that rarely agree with the reference, final states far off) carry ``flags`` with the reason
(``flag_suspicious``; they do not fail the run).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeasr.evaluation.model_logprobs import exported_mode
from edgeasr.runtimes.errors import UserError
from edgeasr.machine import cpu_name

SCHEMA = "edgeasr-parity/1"
ONNX_BACKENDS = ("ort", "openvino", "tensorrt", "ort-cuda")
MODES = ("step", "full", "chunk")
UTT_DONE = "edgeasr-parity: utterance done"  # a cell process's progress line on stderr


@dataclass
class CellSpec:
    id: str
    role: str  # "reference" | "candidate" | "peer"
    runner: str  # "onnx" | "torch" | "peer"
    model: str  # ONNX path, checkpoint RUN_DIR/NAME, or peer name
    label: str  # what the tables show as the model
    backend: str
    precision: str
    mode: str
    direction: str = "l2r"
    chunk_frames: int = 32
    threads: int = 1
    ref_id: str | None = None


# --- small helpers ---------------------------------------------------------------------------------------------
def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _rss_mb() -> float:
    v = _status_mb("VmRSS")
    return float("nan") if v is None else v


def _peak_rss_mb() -> float:
    """VmHWM: the high-water mark of this process's own address space. Not ``ru_maxrss``: Linux carries the
    forked parent's high-water mark across exec into it (exec_mmap -> setmax_mm_hiwater_rss), so a cell process
    started by a parent that has torch loaded would report the parent's ~300 MB."""
    v = _status_mb("VmHWM")
    if v is not None:
        return v
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no /proc: the best there is
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def _pct(xs, q) -> float | None:
    return None if not len(xs) else float(np.percentile(np.asarray(xs, np.float64), q))


def _r(x, n=4):
    return None if x is None or (isinstance(x, float) and not np.isfinite(x)) else round(float(x), n)


def sha256_weights(run_dir: Path) -> str | None:
    from edgeasr.runtimes.files import sha256_file
    from edgeasr.models.checkpoint import WEIGHTS

    p = Path(run_dir) / WEIGHTS
    return sha256_file(p) if p.is_file() else None


def find_reference(sha: str, search=("work/runs",)) -> str | None:
    """A checkpoint (shipped name or RUN_DIR) whose weights hash is ``sha`` (the ONNX ``edgeasr.source_sha256``)."""
    from edgeasr import pretrained

    if not sha:
        return None
    cands = [(n, p) for n, p in pretrained.shipped().items()]
    for root in search:
        r = Path(root)
        if r.is_dir():
            cands += [(str(p.parent), p.parent) for p in sorted(r.glob("*/model.safetensors"))]
    for name, path in cands:
        if sha256_weights(path) == sha:
            return name
    return None


# --- running one cell (in this process or a fresh one) ------------------------------------------------------------
def _make_backend(spec: CellSpec):
    from edgeasr.runtimes.backends import get_backend

    if spec.runner == "torch":
        from edgeasr.evaluation.torch_backend import TorchBackend

        return TorchBackend(spec.model, threads=spec.threads, kind=spec.mode, direction=spec.direction,
                            chunk_frames=spec.chunk_frames)
    opts = {"threads": spec.threads}
    if spec.backend == "openvino" and spec.precision == "bf16":
        opts["precision"] = "bf16"
    return get_backend(spec.backend, spec.model, **opts)


def _run_peer(spec: CellSpec, utts: list[dict], audio: list[np.ndarray], on_utt) -> dict:
    from pocketsphinx import Decoder

    t0 = time.perf_counter()
    dec = Decoder(loglevel="FATAL")
    load_s = time.perf_counter() - t0
    base = _rss_mb()
    hyps, rtf = [], []
    for u, a in zip(utts, audio):
        pcm = (np.clip(a, -1, 1) * 32767).astype("<i2").tobytes()
        t = time.perf_counter()
        dec.start_utt()
        dec.process_raw(pcm, full_utt=True)
        dec.end_utt()
        h = dec.hyp()
        hyps.append(h.hypstr if h is not None else "")
        rtf.append((time.perf_counter() - t) / u["duration"])
        on_utt()
    return {"hyps": hyps, "rtf": rtf, "rtf_encoder": [], "load_s": load_s, "base_rss_mb": base}


def run_cell(spec: CellSpec, utts: list[dict], on_utt=None) -> dict:
    """Decode every utterance; returns hyps, logprobs, final states and timings (see the module docstring).
    ``on_utt()`` after each utterance (outside the timed code)."""
    from edgeasr.runtimes.audio import load_audio

    on_utt = on_utt or (lambda: None)
    audio = [load_audio(u["audio_filepath"])[0] for u in utts]  # loaded before timing and before the model
    notices: list[str] = []
    if spec.runner == "peer":
        out = _run_peer(spec, utts, audio, on_utt)
        out.update(notices=notices, peak_rss_mb=_peak_rss_mb())
        return out
    from edgeasr.runtimes.session import OfflineSession, StreamingSession

    b = _make_backend(spec)
    base = _rss_mb()
    t0 = time.perf_counter()
    b.activate()
    sess = StreamingSession(b, spec.chunk_frames, keep_logprobs=True) if spec.mode == "step" \
        else OfflineSession(b, spec.chunk_frames)
    load_s = time.perf_counter() - t0
    notices += list(getattr(b, "notices", []))
    backend_mode = getattr(b, "mode", None)  # e.g. OpenVINO "stateful, static shapes"
    enc = [0.0]
    hyps, lps, states, rtf, rtf_enc, lat, first = [], [], [], [], [], [], []
    if spec.mode == "step":
        orig = b.step

        def timed_step(x, h):
            t = time.perf_counter()
            r = orig(x, h)
            enc[0] += time.perf_counter() - t
            return r

        b.step = timed_step
        sr = int(b.meta["sample_rate"])
        piece = int(round(spec.chunk_frames * sess.fbank_opts.frame_shift_ms * sr / 1000))
        stream = sess.stream
        for u, a in zip(utts, audio):
            stream.reset()
            sess.logprobs.clear()
            enc[0], total, fp = 0.0, 0.0, None
            for i in range(0, len(a), piece):
                before = sess.chunks_run
                t = time.perf_counter()
                p = stream.accept_waveform(a[i:i + piece])
                dt = time.perf_counter() - t
                total += dt
                if sess.chunks_run > before:
                    lat.append(dt)
                if fp is None and p:
                    fp = min(i + piece, len(a)) / sr + dt
            before = sess.chunks_run
            t = time.perf_counter()
            text = stream.flush()
            dt = time.perf_counter() - t
            total += dt
            if sess.chunks_run > before:
                lat.append(dt)
            if fp is None and text:
                fp = len(a) / sr + dt
            hyps.append(text)
            lps.append(sess.stream_logprobs(stream))
            st = b.get_state(stream.handle) if stream.handle is not None else {}
            states.append({k: np.array(v, np.float32) for k, v in st.items()})
            rtf.append(total / u["duration"])
            rtf_enc.append(enc[0] / u["duration"])
            if fp is not None:
                first.append(fp)
            on_utt()
    else:
        for u, a in zip(utts, audio):
            t = time.perf_counter()
            f = sess.features(a)
            t1 = time.perf_counter()
            lp = sess.logprobs(f)
            t2 = time.perf_counter()
            hyps.append(sess.decode(lp))
            t3 = time.perf_counter()
            lps.append(np.asarray(lp, np.float32))
            rtf.append((t3 - t) / u["duration"])
            rtf_enc.append((t2 - t1) / u["duration"])
            on_utt()
    b.deactivate()
    return {"hyps": hyps, "logprobs": lps, "states": states, "rtf": rtf, "rtf_encoder": rtf_enc,
            "latency_s": lat, "first_partial_s": first, "load_s": load_s, "base_rss_mb": base,
            "peak_rss_mb": _peak_rss_mb(), "notices": notices, "backend_mode": backend_mode}


def _run_isolated(spec: CellSpec, utts: list[dict], tmp: Path, index: int = 0, on_utt=None) -> dict:
    """Run one cell in a fresh interpreter; a failure comes back as {"error": one line}. The child reports each
    utterance done on stderr (``UTT_DONE`` lines), read as they come for ``on_utt()``."""
    req, res = tmp / f"cell{index}.json", tmp / f"cell{index}.npz"
    req.write_text(json.dumps({"spec": asdict(spec), "utts": utts}))
    env = dict(os.environ, OMP_NUM_THREADS=str(spec.threads), PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    stderr = []
    with subprocess.Popen([sys.executable, "-m", "edgeasr.evaluation.parity", "--cell", str(req), str(res)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env) as p:
        try:
            for line in p.stderr:
                if line.rstrip("\n") == UTT_DONE:
                    if on_utt:
                        on_utt()
                else:
                    stderr.append(line.rstrip("\n"))
        except BaseException:  # Ctrl-C, SIGTERM: the cell must not outlive the run
            p.kill()
            raise
    if p.returncode != 0 or not res.is_file():
        lines = [ln for ln in stderr if ln.strip()]
        return {"error": (lines[-1] if lines else f"cell process exited {p.returncode}")[:400]}
    out = _load_cell(res)
    out["notices"] = out.get("notices", []) + [ln[len("notice: "):] for ln in stderr
                                               if ln.startswith("notice: ") and ln[8:] not in out.get("notices", [])]
    return out


def _cell_main(req: str, res: str) -> int:
    d = json.loads(Path(req).read_text())
    try:
        out = run_cell(CellSpec(**d["spec"]), d["utts"], on_utt=lambda: print(UTT_DONE, file=sys.stderr, flush=True))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _save_cell(out, res)
    return 0


def _save_cell(out: dict, path) -> None:
    """Cell results between processes without pickle: arrays in an .npz, everything else in JSON inside it."""
    # the peer cell has neither logprobs nor states (its own model and vocabulary)
    logprobs, states = out.get("logprobs", []), out.get("states", [])
    arrays = {f"lp{i}": a for i, a in enumerate(logprobs)}
    for i, st in enumerate(states):
        arrays.update({f"st{i}/{k}": v for k, v in st.items()})
    rest = {k: v for k, v in out.items() if k not in ("logprobs", "states")}
    rest.update(n_logprobs=len(logprobs), n_states=len(states))
    with open(path, "wb") as f:
        np.savez(f, __json__=np.frombuffer(json.dumps(rest).encode(), np.uint8), **arrays)


def _load_cell(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        out = json.loads(bytes(z["__json__"]).decode())
        out["logprobs"] = [z[f"lp{i}"] for i in range(out.pop("n_logprobs"))]
        out["states"] = [{k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(f"st{i}/")}
                         for i in range(out.pop("n_states"))]
    return out


# --- planning ----------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    cells: list[CellSpec] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    reference: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _ov_bf16_offered() -> tuple[bool, str]:
    try:
        import openvino as ov

        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as e:  # noqa: BLE001 - availability probing
        return False, f"cannot query OpenVINO CPU capabilities ({e})"
    return ("BF16" in caps), ("CPU offers BF16" if "BF16" in caps else f"CPU capabilities {list(caps)} lack BF16")


def graph_mode(meta: dict) -> tuple[str, str, int]:
    """(graph kind, direction as parity compares it, chunk frames) of an exported file."""
    kind, direction = meta["graph_kind"], meta.get("direction", "l2r")
    if kind == "step" and direction != "chunk-bi":
        direction = "l2r"  # every other step graph streams its L2R form
    if direction == "chunk-bi" and int(meta.get("lookahead_frames") or 0):
        direction = exported_mode(meta)  # chunk-bi:320ms+320ms: the reference streams with that look-ahead
    return kind, direction, int(meta.get("chunk_frames") or 32)


def _onnx_reference(pl: "Plan", path: Path, metas: list, threads: int) -> "CellSpec":
    """The reference cell for ``--reference MODEL.onnx``: that file on ONNX Runtime fp32, for installs without
    torch (e.g. comparing OpenVINO and int8 against ORT on the device itself). Every candidate compares to it."""
    from edgeasr.runtimes.backends import available
    from edgeasr.runtimes.metadata import read_metadata

    if not path.is_file():
        raise UserError(f"--reference {path}: no such ONNX file")
    meta = read_metadata(path)
    v0 = metas[0][1]
    if meta["vocab"] != v0["vocab"] or int(meta["blank_id"]) != int(v0["blank_id"]):
        raise UserError(f"--reference {path.name} has a different vocabulary ({len(meta['vocab'])} tokens) than "
                        f"{metas[0][0].name} ({len(v0['vocab'])} tokens)")
    if str(meta.get("precision", "fp32")) != "fp32":
        raise UserError(f"--reference {path.name} is {meta.get('precision')}: the reference must be an fp32 graph")
    ok, why = available("ort")
    if not ok:
        raise UserError(f"the ONNX Runtime reference cannot run: {why}")
    kind, direction, cf = graph_mode(meta)
    for m, other in metas:
        if graph_mode(other)[:2] != (kind, direction):
            pl.warnings.append(f"{m.name} runs {'/'.join(map(str, graph_mode(other)[:2]))}, the reference "
                               f"{path.name} {kind}/{direction}: its error figures compare different computations")
    pl.reference = {"model": str(path), "path": str(path), "sha256": meta.get("source_sha256", ""),
                    "how": "--reference (an ONNX file on ONNX Runtime fp32)", "backend": "ort", "precision": "fp32"}
    return CellSpec(f"{path.name}|ort|fp32|{kind}|reference", "reference", "onnx", str(path), path.name, "ort", "fp32", kind,
                    direction, cf, threads)


def _torch_reference(pl: "Plan", reference: str | None, metas: list) -> None:
    """``pl.reference`` for the torch fp32 reference: ``reference`` (RUN_DIR or shipped name) or the checkpoint
    whose weights match the models' ``edgeasr.source_sha256``."""
    from edgeasr import pretrained
    from edgeasr.runtimes.backends import available

    torch_ok, torch_why = available("torch")
    if not torch_ok:
        raise UserError(f"the torch reference cannot run: {torch_why}; give --reference MODEL.onnx to compare "
                        f"against an fp32 graph on ONNX Runtime instead")
    v0 = metas[0][1]
    shas = sorted({meta.get("source_sha256", "") for _, meta in metas} - {""})
    how = "--reference"
    if reference is None:
        if len(shas) != 1:
            raise UserError("--reference RUN_DIR|NAME|MODEL.onnx is required: " + (
                "the models come from different checkpoints" if shas else
                "the models carry no edgeasr.source_sha256"))
        reference = find_reference(shas[0])
        if reference is None:
            raise UserError(f"--reference RUN_DIR|NAME|MODEL.onnx is required: no shipped model or work/runs/* "
                            f"checkpoint has the weights of {metas[0][0].name} (source_sha256 {shas[0][:12]}…)")
        how = "derived from edgeasr.source_sha256"
    ref_dir = pretrained.resolve_model_dir(reference)
    if ref_dir is None:
        names = ", ".join(["default", *pretrained.shipped()])
        raise UserError(f"--reference {reference}: not a checkpoint directory, a shipped model ({names}) nor an "
                        f".onnx file")
    cfg = json.loads((ref_dir / "config.json").read_text())
    if list(cfg.get("vocab", [])) != list(v0["vocab"]) or int(cfg.get("blank_id", 0)) != int(v0["blank_id"]):
        raise UserError(f"--reference {reference} has a different vocabulary ({len(cfg.get('vocab', []))} tokens) "
                        f"than {metas[0][0].name} ({len(v0['vocab'])} tokens)")
    ref_sha = sha256_weights(ref_dir)
    for m, meta in metas:
        s = meta.get("source_sha256", "")
        if s and ref_sha and s != ref_sha:
            pl.warnings.append(f"{m.name} was exported from other weights (source_sha256 {s[:12]}…) than the "
                               f"reference {reference} ({ref_sha[:12]}…): differences include training, not only "
                               "the runtime")
    pl.reference = {"model": str(reference), "path": str(ref_dir), "sha256": ref_sha, "how": how,
                    "backend": "torch", "precision": "fp32"}


def plan(models: list[Path], reference: str | None, backends: list[str], modes: list[str], threads: int = 1,
         peer: bool | None = None, bf16: bool = True) -> Plan:
    from edgeasr.runtimes.backends import available
    from edgeasr.runtimes.metadata import read_metadata

    if not models:
        raise UserError("give at least one --model")
    pl = Plan()
    metas = []
    for m in models:
        m = Path(m)
        if not m.is_file():
            raise UserError(f"{m}: no such ONNX file")
        metas.append((m, read_metadata(m)))
    v0 = metas[0][1]
    for m, meta in metas[1:]:
        if meta["vocab"] != v0["vocab"] or int(meta["blank_id"]) != int(v0["blank_id"]):
            raise UserError(f"models have different vocabularies: {metas[0][0].name} ({len(v0['vocab'])} tokens, "
                            f"blank {v0['blank_id']}) vs {m.name} ({len(meta['vocab'])} tokens, blank "
                            f"{meta['blank_id']}); compare models of one checkpoint family")
    onnx_ref = _onnx_reference(pl, Path(reference), metas, threads) \
        if reference is not None and str(reference).endswith(".onnx") else None
    if onnx_ref is None:
        _torch_reference(pl, reference, metas)
    avail = {b: available(b) for b in backends}
    bf16_ok = _ov_bf16_offered() if bf16 and "openvino" in backends and avail["openvino"][0] else (False, "")
    refs: dict[tuple, CellSpec] = {}
    for m, meta in metas:
        prec = str(meta.get("precision", "fp32"))
        kind, direction, cf = graph_mode(meta)
        pl.models.append({"file": str(m), "name": m.name, "graph_kind": kind, "precision": prec,
                          "direction": direction, "chunk_frames": cf, "mixer": meta.get("mixer"),
                          "size_mb": round(m.stat().st_size / 1e6, 3), "quant_recipe": meta.get("quant_recipe")})
        precs_for = {b: [prec] for b in backends}
        if prec == "fp32" and bf16 and "openvino" in backends:
            precs_for["openvino"] = ["fp32", "bf16"]
        if kind not in modes:
            for b in backends:
                for p in precs_for[b]:
                    pl.skipped.append({"id": f"{m.name}|{b}|{p}|{kind}", "role": "candidate", "model": m.name,
                                       "backend": b, "precision": p, "mode": kind, "status": "skipped",
                                       "reason": f"mode {kind} not selected (--modes {','.join(modes)})"})
            continue
        key = (kind, direction, cf if kind != "full" or direction.startswith("chunk-bi") else 0)
        if onnx_ref is not None:
            refs[key] = refs.get(key, onnx_ref)
        elif key not in refs:
            ref_name = Path(str(pl.reference["model"])).name
            rid = f"{ref_name}|torch|fp32|{kind}" + (f"|{direction}" if direction != "l2r" or kind != "step" else "") + \
                  (f"|{cf}f" if kind != "full" or direction.startswith("chunk-bi") else "")
            refs[key] = CellSpec(rid, "reference", "torch", str(pl.reference["model"]), ref_name, "torch",
                                 "fp32", kind, direction, cf, threads)
        for b in backends:
            for p in precs_for[b]:
                cid = f"{m.name}|{b}|{p}|{kind}"
                ok, why = avail[b]
                if ok and p == "bf16" and not bf16_ok[0]:
                    ok, why = False, f"OpenVINO bf16 not offered here: {bf16_ok[1]}"
                if not ok:
                    pl.skipped.append({"id": cid, "role": "candidate", "model": m.name, "backend": b,
                                       "precision": p, "mode": kind, "status": "skipped", "reason": why})
                    continue
                pl.cells.append(CellSpec(cid, "candidate", "onnx", str(m), m.name, b, p, kind, direction, cf,
                                         threads, refs[key].id))
    pl.cells = list({id(r): r for r in refs.values()}.values()) + pl.cells
    peer_ok, peer_why = peer_available()
    if peer is None:
        peer = peer_ok
    if peer and peer_ok:
        pl.cells.append(CellSpec("pocketsphinx|pocketsphinx|fp32|offline", "peer", "peer", "pocketsphinx en-us",
                                 "pocketsphinx en-us", "pocketsphinx", "fp32", "offline", threads=1))
    else:
        pl.skipped.append({"id": "pocketsphinx|pocketsphinx|fp32|offline", "role": "peer", "model":
                           "pocketsphinx en-us", "backend": "pocketsphinx", "precision": "fp32", "mode": "offline",
                           "status": "skipped", "reason": peer_why if not peer_ok else "--no-peer"})
    return pl


def peer_available() -> tuple[bool, str]:
    from edgeasr.evaluation.peer import available as pa

    return pa()


# --- comparing ---------------------------------------------------------------------------------------------------
def compare(ref: dict, got: dict) -> dict:
    n = min(len(ref["hyps"]), len(got["hyps"]))
    agree = sum(_norm(a) == _norm(b) for a, b in zip(ref["hyps"][:n], got["hyps"][:n])) / max(1, n)
    out = {"agreement_pct": 100.0 * agree}
    errs, cos, frame_mismatch = [], [], 0
    for a, b in zip(ref.get("logprobs", []), got.get("logprobs", [])):
        if a.shape != b.shape:
            frame_mismatch += 1
            t = min(len(a), len(b))
            a, b = a[:t], b[:t]
        if a.size == 0:
            continue
        d = np.abs(a.astype(np.float64) - b.astype(np.float64)).ravel()
        errs.append(d)
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        cos.append(float(a.ravel().astype(np.float64) @ b.ravel() / (na * nb)) if na and nb else 1.0)
    if errs:
        e = np.concatenate(errs)
        out.update(err_max_abs=float(e.max()), err_p99=float(np.percentile(e, 99)), cosine_min=float(min(cos)),
                   cosine_mean=float(np.mean(cos)))
    if frame_mismatch:
        out["frame_mismatch_utterances"] = frame_mismatch
    st, rel = {}, {}
    for a, b in zip(ref.get("states", []), got.get("states", [])):
        for k, v in a.items():
            if k in b and b[k].shape == v.shape and v.size:
                e = float(np.abs(v.astype(np.float64) - b[k]).max())
                st[k] = max(st.get(k, 0.0), e)
                rel[k] = max(rel.get(k, 0.0), e / max(float(np.abs(v).max()), 1e-12))
    if st:  # absolute, and relative to the largest |reference state| (WKV/SSM states grow with the utterance)
        out["state_err_max_abs"] = max(st.values())
        out["state_err_rel"] = max(rel.values())
        out["state_err_by_state"] = {k: _r(v, 7) for k, v in st.items()}
    return out


def _norm(t: str) -> str:
    from edgeasr.runtimes.vocab import normalize_text

    return normalize_text(t)


def _metrics(cell: dict, res: dict, refs_text: list[str], isolate: bool) -> dict:
    from edgeasr.evaluation.metrics import cer, wer

    lat = np.asarray(res.get("latency_s", []), np.float64) * 1000
    m = {"wer": wer(refs_text, res["hyps"]), "cer": cer(refs_text, res["hyps"]),
         "rtf_median": _pct(res["rtf"], 50), "rtf_p90": _pct(res["rtf"], 90),
         "rtf_encoder_median": _pct(res.get("rtf_encoder", []), 50),
         "latency_ms_p50": _pct(lat, 50), "latency_ms_p95": _pct(lat, 95), "latency_ms_p99": _pct(lat, 99),
         "first_partial_ms_median": _pct(np.asarray(res.get("first_partial_s", [])) * 1000, 50),
         "peak_rss_mb": res.get("peak_rss_mb"), "base_rss_mb": res.get("base_rss_mb"),
         "load_s": res.get("load_s")}
    cell["rss_scope"] = "own process" if isolate else "shared process"
    cell["rtf"] = [_r(x, 5) for x in res["rtf"]]
    cell["latencies_ms"] = [_r(x, 3) for x in lat.tolist()]
    cell["hypotheses"] = res["hyps"]
    return m


def _intervals(cells: list[dict], refs_text: list[str]) -> None:
    """``wer_ci95`` of every measured cell; ``wer_delta_ci95`` and ``significant`` of every cell with a ΔWER, paired
    with the cell it was compared against (the same utterances)."""
    from edgeasr.evaluation.bootstrap import delta_ci, significant, wer_ci, word_errors

    pairs = {c["id"]: word_errors(refs_text, c["hypotheses"]) for c in cells
             if c["status"] in ("ok", "reference") and "hypotheses" in c}
    for c in cells:
        if c["id"] not in pairs:
            continue
        m = c["metrics"]
        m["wer_ci95"] = [_r(v, 6) for v in wer_ci(pairs[c["id"]])]
        base = c["id"] if c["status"] == "reference" else c.get("reference")
        if m.get("wer_delta") is not None and base in pairs:
            ci = delta_ci(pairs[base], pairs[c["id"]])
            m["wer_delta_ci95"] = [_r(v, 6) for v in ci]
            m["significant"] = significant(ci)


# Suspicious-cell levels: flags say "look at this cell"; they never change the verdict (only thresholds do).
# A conversion of the same weights should give the same transcript nearly always: one utterance in ten differing
# is where int8/bf16 drift starts to be more than rounding (fp32 on any backend agrees 100 %).
FLAG_AGREEMENT_PCT = 90.0
# The final states carry the whole utterance forward, so their error is the early sign of drift. It is judged
# against the fp32 cell of the same reference (what the backend's own rounding costs) and, because WKV/SSM states
# grow with the utterance, against the state's size rather than an absolute floor: fp32 sits near 1e-6 of it,
# bf16 at 1-3 %, an int8 file that lost the states at 15 % and more.
FLAG_STATE_RATIO = 100.0
FLAG_STATE_REL = 0.05


def check_thresholds(cells: list[dict], max_wer_delta: float | None, max_err: float | None) -> list[str]:
    """Sets ``threshold_failures`` (one line each) and ``failed_metrics`` (their metric keys) on every measured
    candidate; returns the report's ``failures``: every crossing and every cell that did not run, by cell id."""
    failures = []
    for c in cells:
        if c["status"] == "error":
            failures.append(f"{c['id']}: did not run ({c['reason']})")
            continue
        if c["status"] != "ok" or c["role"] != "candidate":
            continue
        m, why, keys = c["metrics"], [], []
        checks = (("wer_delta", max_wer_delta, lambda v, t: f"ΔWER {100 * v:+.2f} points > {100 * t:g}"),
                  ("wer_lm_delta", max_wer_delta,
                   lambda v, t: f"ΔWER with the LM {100 * v:+.2f} points > {100 * t:g}"),
                  ("err_max_abs", max_err, lambda v, t: f"max abs logprob error {v:.3g} > {t}"),
                  ("state_err_max_abs", max_err, lambda v, t: f"max abs final-state error {v:.3g} > {t}"))
        for key, limit, say in checks:
            if limit is not None and m.get(key) is not None and m[key] > limit:
                why.append(say(m[key], limit))
                keys.append(key)
        c["threshold_failures"] = why
        c["failed_metrics"] = keys
        failures += [f"{c['id']}: {w}" for w in why]
    return failures


def flag_suspicious(cells: list[dict]) -> None:
    """Sets ``flags`` (``[{"metric", "reason"}]``) on every measured candidate: transcripts that agree with the
    reference too rarely, final states far off where the fp32 cell is not, log-probs with a different frame count."""
    ok = [c for c in cells if c["status"] == "ok" and c["role"] == "candidate"]
    for c in ok:
        m, flags = c["metrics"], []
        if m.get("agreement_pct") is not None and m["agreement_pct"] < FLAG_AGREEMENT_PCT:
            flags.append({"metric": "agreement_pct", "reason": f"transcript identical to the reference's on "
                          f"{m['agreement_pct']:.0f} % of utterances (< {FLAG_AGREEMENT_PCT:.0f} %)"})
        rel = m.get("state_err_rel")
        if rel is not None and rel > FLAG_STATE_REL:
            err, base = m["state_err_max_abs"], _fp32_state_err(c, ok)
            size = f"final-state error {err:.2g} = {100 * rel:.0f} % of the largest reference state"
            if base is None:  # an fp32 cell (or none to compare with): the state's size is the only measure
                flags.append({"metric": "state_err_max_abs",
                              "reason": f"{size} (> {100 * FLAG_STATE_REL:.0f} %)"})
            elif err > FLAG_STATE_RATIO * base:
                times = f"{err / base:,.0f}x the fp32 cell's {base:.2g}" if base else "the fp32 cell's is 0"
                flags.append({"metric": "state_err_max_abs", "reason": f"{size}, {times} "
                              f"(> {100 * FLAG_STATE_REL:.0f} % and > {FLAG_STATE_RATIO:.0f}x)"})
        if m.get("frame_mismatch_utterances"):
            flags.append({"metric": "err_max_abs", "reason": f"log-probs have a different frame count from the "
                          f"reference on {m['frame_mismatch_utterances']} utterance(s)"})
        c["flags"] = flags


def _fp32_state_err(cell: dict, cells: list[dict]) -> float | None:
    """The final-state error of the fp32 cell compared with the same reference (the same backend preferred): what
    rounding alone costs there. None for an fp32 cell itself or when there is none."""
    if cell["precision"] == "fp32":
        return None
    fp32 = [x for x in cells if x["precision"] == "fp32" and x["reference"] == cell["reference"]
            and x["metrics"].get("state_err_max_abs") is not None]
    best = min(fp32, key=lambda x: (x["backend"] != cell["backend"], x["metrics"]["state_err_max_abs"]), default=None)
    return None if best is None else best["metrics"]["state_err_max_abs"]


def run_parity(models, test, reference=None, backends=("all",), modes=("step", "full"), max_wer_delta=None,
               max_err=None, max_utterances=None, threads=1, peer=None, bf16=True, isolate=True, log=None,
               lm=None, bar=None) -> dict:
    """Plan, run every cell, compare with the reference, check thresholds; returns the report dict. ``bar``: an
    ``edgeasr.progress`` bar, advanced per utterance of every cell (when it shows, it replaces the per-cell log line).

    ``lm``: an LM directory (``edgeasr lm build``); every cell's log-probs are then also decoded with the word-LM
    beam search (``wer_lm``, ``wer_lm_delta``; ``max_wer_delta`` applies to both decoders)."""
    from edgeasr.runtimes.backends import NAMES
    from edgeasr.data.manifest import read_manifest

    log = log or (lambda msg: None)
    backends = [b.strip() for b in backends if b.strip()]
    if not backends or "all" in backends:
        backends = [b for b in NAMES if b != "torch"]
    bad = [b for b in backends if b not in NAMES or b == "torch"]
    if bad:
        raise UserError(f"unknown backend {bad[0]!r} for --backends; choose all or "
                        f"{', '.join(b for b in NAMES if b != 'torch')}")
    modes = [m.strip() for m in modes if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise UserError(f"--modes must be a comma list of {', '.join(MODES)}")
    if max_utterances is not None and max_utterances < 1:
        raise UserError(f"--max-utterances must be >= 1, got {max_utterances}")
    entries = read_manifest(test)
    if max_utterances:
        entries = entries[:max_utterances]
    utts = [{"audio_filepath": e.audio_filepath, "text": e.text, "duration": float(e.duration)} for e in entries]
    refs_text = [u["text"] for u in utts]
    pl = plan([Path(m) for m in models], reference, backends, modes, threads, peer, bf16)
    word_lm = None
    if lm:
        from edgeasr.runtimes.lm_decoder import WordLM
        from edgeasr.runtimes.metadata import read_metadata
        from edgeasr.evaluation.metrics import wer

        meta = read_metadata(str(models[0]))
        word_lm = WordLM(lm, meta["vocab"], int(meta["blank_id"]))
    results: dict[str, dict] = {}
    cells_out: list[dict] = []
    from edgeasr.progress import progress_bar  # here: a cell process (``--cell``) has no bar

    bar = bar or progress_bar(quiet=True)
    overall = bar.add_task("parity", total=len(pl.cells) * len(utts), unit="utts")
    current = bar.add_task("", total=len(utts), unit="utts")

    def on_utt():
        bar.advance(current)
        bar.advance(overall)

    with tempfile.TemporaryDirectory(prefix="edgeasr-parity-") as tmp:
        for i, spec in enumerate(pl.cells, 1):
            if bar.disable:  # a log gets the line the bar would have shown
                log(f"[{i}/{len(pl.cells)}] {spec.id}")
            bar.update(overall, description=f"parity, cell {i}/{len(pl.cells)}", completed=(i - 1) * len(utts))
            bar.reset(current, total=len(utts), description=spec.id)
            t0 = time.perf_counter()
            if isolate:
                res = _run_isolated(spec, utts, Path(tmp), i, on_utt)
            else:
                try:
                    res = run_cell(spec, utts, on_utt)
                except UserError as e:
                    res = {"error": str(e)}
            cell = {"id": spec.id, "role": spec.role, "model": spec.label, "backend": spec.backend,
                    "precision": spec.precision, "mode": spec.mode, "direction": spec.direction,
                    "chunk_frames": spec.chunk_frames, "threads": spec.threads, "reference": spec.ref_id,
                    "wall_s": round(time.perf_counter() - t0, 2)}
            if spec.runner == "onnx":
                cell["file_mb"] = round(Path(spec.model).stat().st_size / 1e6, 3)
            elif spec.runner == "torch":
                w = Path(pl.reference["path"]) / "model.safetensors"
                cell["file_mb"] = round(w.stat().st_size / 1e6, 3) if w.is_file() else None
            if "error" in res:
                cell.update(status="error", reason=res["error"])
                log(f"    error: {res['error']}")
            else:
                cell["status"] = "reference" if spec.role == "reference" else "ok"
                cell["metrics"] = _metrics(cell, res, refs_text, isolate)
                if word_lm is not None and res.get("logprobs"):  # the peer has no CTC log-probs to decode
                    bar.reset(current, total=len(utts), description=f"{spec.id}: LM beam search")
                    cell["hypotheses_lm"] = []
                    for lp in res["logprobs"]:
                        cell["hypotheses_lm"].append(word_lm.decode(lp))
                        bar.advance(current)
                    cell["metrics"]["wer_lm"] = wer(refs_text, cell["hypotheses_lm"])
                cell["notices"] = res.get("notices", [])
                if res.get("backend_mode"):
                    cell["backend_mode"] = res["backend_mode"]
                results[spec.id] = res
            cells_out.append(cell)
    by_id = {c["id"]: c for c in cells_out}
    first_ref = next((x for x in cells_out if x["status"] == "reference"), None)
    for c in cells_out:
        if c["status"] != "ok":
            continue
        if c["role"] == "peer":  # the peer is compared on WER only (its own model, its own vocabulary)
            if first_ref is not None:
                c["reference"] = first_ref["id"]
                c["metrics"]["wer_delta"] = c["metrics"]["wer"] - first_ref["metrics"]["wer"]
            continue
        ref_id = c["reference"]
        if ref_id not in results:
            c["comparison_note"] = f"reference cell {ref_id} did not run: no ΔWER or error figures"
            continue
        c["metrics"]["wer_delta"] = c["metrics"]["wer"] - by_id[ref_id]["metrics"]["wer"]
        if c["metrics"].get("wer_lm") is not None and by_id[ref_id]["metrics"].get("wer_lm") is not None:
            c["metrics"]["wer_lm_delta"] = c["metrics"]["wer_lm"] - by_id[ref_id]["metrics"]["wer_lm"]
        c["metrics"].update(compare(results[ref_id], results[c["id"]]))
    for c in cells_out:
        if c["status"] == "reference":
            c["metrics"].update(wer_delta=0.0, agreement_pct=100.0, err_max_abs=0.0, err_p99=0.0, cosine_min=1.0)
            if "wer_lm" in c["metrics"]:
                c["metrics"]["wer_lm_delta"] = 0.0
    _intervals(cells_out, refs_text)
    failures = check_thresholds(cells_out, max_wer_delta, max_err)
    flag_suspicious(cells_out)
    for c in cells_out:
        if "metrics" in c:
            c["metrics"] = {k: (_r(v, 6) if isinstance(v, float) else v) for k, v in c["metrics"].items()}
    all_cells = cells_out + pl.skipped
    dur = sum(u["duration"] for u in utts)
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "edgeasr_version": _version(),
        "host": {"platform": platform.platform(), "python": platform.python_version(),
                 "cpu": cpu_name(), "cpu_count": os.cpu_count()},
        "threads": threads,
        "test": {"manifest": str(test), "utterances": len(utts), "audio_seconds": round(dur, 3)},
        "reference": pl.reference,
        "models": pl.models,
        "backends": backends,
        "modes": modes,
        "thresholds": {"max_wer_delta": max_wer_delta, "max_err": max_err},
        "lm": None if word_lm is None else {
            "path": str(lm), **{k: word_lm.info.get(k) for k in ("order", "sentences", "words", "sources")},
            "weights": word_lm.weights.to_dict(), "tuned_on": word_lm.info.get("weights", {}).get("tuned_on")},
        "measurement": {
            "rtf": "processing s / audio s per utterance, audio loading and model load excluded; end to end = "
                   "features + encoder + greedy CTC, encoder = graph calls only",
            "latency": "step mode: wall time of each accept_waveform call (chunk-sized audio pieces) that ran the "
                       "model, incl. features and decode; first partial = audio fed until the first non-empty "
                       "partial + that call's processing time",
            "error": "logprobs vs the reference cell of the same mode/direction/chunk (max abs, p99 abs, cosine of "
                     "the worst utterance); step mode also the final states after the last chunk",
            "rss": ("peak RSS = VmHWM of a fresh process running only this cell (interpreter + backend "
                    "libraries + model + buffers + preloaded audio; ONNX cells never import torch); base = VmRSS "
                    "just before the model loads") if isolate else
                   "cells share one process: peak RSS is that process's high-water mark so far (not per cell)",
        },
        "cells": all_cells,
        "warnings": pl.warnings,
        "failures": failures,
        "passed": not failures,
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("edgeasr")
    except Exception:  # noqa: BLE001
        return "unknown"




if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--cell":
        sys.exit(_cell_main(sys.argv[2], sys.argv[3]))
    print("usage: python -m edgeasr.evaluation.parity --cell REQUEST.json RESULT.pkl (internal; use `edgeasr parity`)",
          file=sys.stderr)
    sys.exit(2)
