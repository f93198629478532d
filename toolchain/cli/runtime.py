"""CLI commands for the deployment runtime: transcribe (any backend, offline or streaming, files or live stdin)
and backends (what runs here and why the others do not)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import numpy as np

from edgeasr.model_ref import exported_mode_error, is_onnx, model_sample_rate, open_backend
from edgeasr.runtimes.errors import UserError

BACKENDS = ["ort", "openvino", "tensorrt", "torch", "ort-cuda"]


def _notice(msg: str) -> None:
    click.echo(f"notice: {msg}", err=True)


def _percentiles(xs: list[float]) -> dict:
    if not xs:
        return {}
    a = np.asarray(xs) * 1000.0
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)}


@click.command()
@click.argument("model")
@click.argument("audio", nargs=-1)
@click.option("--backend", type=click.Choice(BACKENDS), help="Default: ort for ONNX files, torch for checkpoints.")
@click.option("--stream", is_flag=True, help="Stream through the step graph chunk by chunk (partial results).")
@click.option("--chunk-ms", type=float, help="Streaming chunk in ms (default: the model's recommended chunk).")
@click.option("--threads", type=int, default=1, show_default=True, help="Intra-op threads.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]),
              help="Backend compute precision (OpenVINO: bf16 explicitly; TensorRT: fp16).")
@click.option("--explicit-state", is_flag=True, help="OpenVINO: states as graph I/O instead of MakeStateful.")
@click.option("--stdin", "use_stdin", is_flag=True, help="Read raw 16-bit little-endian mono PCM from stdin (live).")
@click.option("--rate", type=int, help="Sample rate of --stdin PCM (default: the model's).")
@click.option("--direction", type=click.Choice(["l2r", "bi", "alt"]),
              help="torch backend, offline: inference mode (ONNX files carry theirs; streaming is l2r).")
@click.option("--lm", "lm_dir", type=click.Path(path_type=Path),
              help="Beam search with this word LM (edgeasr lm build) instead of greedy CTC; streams too.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of text.")
def transcribe(model, audio, backend, stream, chunk_ms, threads, precision, explicit_state, use_stdin, rate,
               direction, lm_dir, as_json):
    """Transcribe AUDIO files (or live PCM on --stdin) with MODEL: an ONNX export (ort, openvino, tensorrt,
    ort-cuda) or a RUN_DIR / shipped name (torch reference)."""
    from edgeasr.runtimes.audio import load_audio
    from edgeasr.runtimes.session import OfflineSession, StreamingSession

    if use_stdin and audio:
        raise UserError("give AUDIO files or --stdin, not both")
    if not use_stdin and not audio:
        raise UserError("no audio: give AUDIO files or --stdin")
    if threads < 1:
        raise UserError("--threads must be >= 1")
    if chunk_ms is not None and chunk_ms <= 0:
        raise UserError("--chunk-ms must be positive")
    stream = stream or use_stdin
    sr = model_sample_rate(model) or 16000  # also: a missing ONNX file fails here, in one line
    if direction and is_onnx(model):
        from edgeasr.runtimes.metadata import read_metadata

        exported = read_metadata(model).get("direction", "l2r")
        if direction != exported:
            raise exported_mode_error(model, exported, [direction])
        direction = None  # the file's own mode: nothing to switch
    first = None
    if audio:  # the first file is read before any model loads: a bad file fails fast, in one line
        first = load_audio(audio[0], sr)
    if lm_dir:
        from edgeasr.runtimes.lm_decoder import read_lm_info

        read_lm_info(lm_dir)  # a wrong LM directory fails before the model loads
    b = open_backend(model, backend, stream, threads, precision, stateful=not explicit_state, direction=direction)
    meta = b.meta
    decoder = None
    if lm_dir:
        from edgeasr.runtimes.lm_decoder import WordLM

        try:
            decoder = WordLM(lm_dir, meta["vocab"], int(meta["blank_id"])).new_decoder
        except UserError:
            b.deactivate()
            raise
    if int(meta["sample_rate"]) != sr:
        sr, first = int(meta["sample_rate"]), None
    chunk = StreamingSession.chunk_for_ms(meta, chunk_ms) if chunk_ms else None
    try:
        if use_stdin:
            _stdin(StreamingSession(b, chunk, decoder=decoder), rate or sr, chunk_ms, as_json)
            return
        session = StreamingSession(b, chunk, decoder=decoder) if stream else OfflineSession(b, decoder=decoder)
        for k, path in enumerate(audio):
            samples, notices = first if (k == 0 and first is not None) else load_audio(path, sr)
            for n in notices:
                _notice(n)
            dur = len(samples) / sr
            t0 = time.perf_counter()
            row = {"audio": path, "backend": b.name, "decoder": "lm" if decoder else "greedy"}
            if stream:
                row.update(_stream_file(session, samples, sr, chunk_ms))
            else:
                row["text"] = session.transcribe(samples)
            elapsed = time.perf_counter() - t0
            row.update({"duration": round(dur, 3), "rtf": round(elapsed / max(dur, 1e-9), 4),
                        "graph": meta["graph_kind"], "precision": precision or meta.get("precision", "fp32")})
            if as_json:
                click.echo(json.dumps(row))
            else:
                click.echo(f"{path}\t{row['text']}")
    finally:
        b.deactivate()


def _stream_file(session, samples: np.ndarray, sr: int, chunk_ms: float | None) -> dict:
    """Feed a file in chunk-sized pieces as a live source would; latencies per fed piece."""
    st = session.stream
    st.reset()
    step = int(round((chunk_ms or session.chunk_frames * session.fbank_opts.frame_shift_ms) * sr / 1000))
    lat = []
    for i in range(0, len(samples), step):
        t = time.perf_counter()
        st.accept_waveform(samples[i:i + step])
        lat.append(time.perf_counter() - t)
    text = st.flush()
    return {"text": text, "partials": st.partials, "chunk_frames": session.chunk_frames,
            "chunk_latency_ms": _percentiles(lat)}


def _stdin(session, rate: int, chunk_ms: float | None, as_json: bool) -> None:
    """Live: raw s16le mono PCM on stdin, partials printed as they change, the final transcript at EOF."""
    from edgeasr.runtimes.resample import StreamResampler

    sr = session.fbank_opts.sample_rate
    res = StreamResampler(rate, sr)
    if rate != sr:
        _notice(f"stdin: resampled {rate} Hz -> {sr} Hz")
    ms = chunk_ms or session.chunk_frames * session.fbank_opts.frame_shift_ms
    nbytes = max(2, int(round(ms * rate / 1000)) * 2)
    src = sys.stdin.buffer
    carry = b""
    total = 0

    def emit(kind: str, text: str) -> None:
        if as_json:
            click.echo(json.dumps({"type": kind, "text": text, "time": round(total / rate, 3)}))
        else:
            click.echo(f"{kind}\t{text}")
        sys.stdout.flush()

    st = session.stream
    while True:
        data = src.read(nbytes)
        if not data:
            break
        data = carry + data
        usable = len(data) - len(data) % 2
        carry = data[usable:]
        pcm = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
        total += len(pcm)
        partial = st.accept_waveform(res.accept(pcm))
        if partial is not None:
            emit("partial", partial)
    if carry:
        _notice("stdin: odd trailing byte ignored (16-bit PCM expected)")
    tail = res.flush()
    if len(tail):
        partial = st.accept_waveform(tail)
        if partial is not None:
            emit("partial", partial)
    emit("final", st.flush())


@click.command(name="backends")
@click.option("--json", "as_json", is_flag=True)
def backends(as_json):
    """List every runtime backend: available here or not, and why."""
    from edgeasr.runtimes.backends import list_backends

    rows = list_backends()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['name']:<9} {'yes' if r['available'] else 'no ':<4} {r['reason']}")


COMMANDS = [transcribe, backends]
