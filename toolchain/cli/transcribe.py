"""CLI commands for the deployment runtime: ``transcribe`` (a thin client of ``edgeasr.Recognizer``: files or
live stdin, offline or streaming, any backend) and ``backends`` (what runs here and why the others do not)."""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import click

from edgeasr.model_ref import check_model_exists, exported_mode_error, is_onnx, open_backend
from edgeasr.runtimes.errors import UserError

BACKENDS = ["ort", "openvino", "tensorrt", "torch", "ort-cuda"]


def _notice(msg: str) -> None:
    click.echo(f"notice: {msg}", err=True)


def _percentiles(xs: list[float]) -> dict:
    if not xs:
        return {}
    import numpy as np

    a = np.asarray(xs) * 1000.0
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)}


def _open(model, backend, stream, threads, precision, explicit_state, direction, lm_dir, chunk_ms):
    """A Recognizer over MODEL: an ONNX file on its backend, or a checkpoint on the torch reference (streaming
    ``default`` runs its chunk-bi sibling)."""
    from edgeasr.models.dirdrop import parse_mode
    from edgeasr.runtimes.recognizer import Recognizer

    if stream and direction is None and not is_onnx(model):
        from edgeasr import pretrained

        chosen, mode = pretrained.streaming_choice(model)
        if mode:
            _notice(f"streaming {model} as {chosen} in {mode} mode" if chosen != model else
                    f"streaming {model} in {mode} mode (trained for it)")
            model, direction = chosen, mode
    chunk_frames = parse_mode(direction)[1] if direction else None
    b = open_backend(model, backend, stream, threads, precision, stateful=not explicit_state, direction=direction,
                     chunk_frames=chunk_frames)
    return Recognizer.from_backend(b, lm=lm_dir, chunk_ms=chunk_ms)


class _LivePartial:
    """The partial transcript of a file as it streams, rewritten in place on stderr (a terminal only)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.width = 0

    def __call__(self, text: str, seconds: float) -> None:
        if self.enabled:
            line = f"[{seconds:7.2f} s] {text}"[-(shutil.get_terminal_size().columns - 1):]
            click.echo("\r" + line.ljust(self.width), nl=False, err=True)
            self.width = len(line)

    def done(self) -> None:
        if self.enabled and self.width:
            click.echo("\r" + " " * self.width + "\r", nl=False, err=True)
            self.width = 0


@click.command()
@click.argument("model")
@click.argument("audio", nargs=-1)
@click.option("--backend", type=click.Choice(BACKENDS), help="Default: ort for ONNX files, torch for checkpoints.")
@click.option("--stream", is_flag=True, help="Stream through the step graph chunk by chunk; on a terminal the "
                                             "partial transcript is shown as it grows.")
@click.option("--chunk-ms", type=float, help="Streaming chunk in ms (default: the model's recommended chunk).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="Intra-op threads.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]),
              help="Backend compute precision (OpenVINO: bf16 explicitly; TensorRT: fp16).")
@click.option("--explicit-state", is_flag=True, help="OpenVINO: states as graph I/O instead of MakeStateful.")
@click.option("--stdin", "use_stdin", is_flag=True, help="Read raw 16-bit little-endian mono PCM from stdin (live).")
@click.option("--rate", type=int, help="Sample rate of --stdin PCM in Hz (default: the model's).")
@click.option("--direction", help="Mode of a checkpoint on the torch backend: l2r, bi or alt offline; l2r or "
                                  "chunk-bi:<ms>ms streaming (ONNX files carry theirs; streaming `default` runs its "
                                  "chunk-bi sibling).")
@click.option("--lm", "lm_dir", type=click.Path(path_type=Path),
              help="Beam search with this word LM (edgeasr lm build) instead of greedy CTC; streams too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines (with token timestamps) instead of text.")
def transcribe(model, audio, backend, stream, chunk_ms, threads, precision, explicit_state, use_stdin, rate,
               direction, lm_dir, as_json):
    """Transcribe AUDIO files (or live PCM on --stdin) with MODEL: an ONNX export (ort, openvino, tensorrt,
    ort-cuda) or a RUN_DIR / shipped name (torch reference)."""
    import math

    from edgeasr.runtimes.audio import audio_notices, check_audio_file
    from edgeasr.runtimes.recognizer import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
    from edgeasr.runtimes.streaming_io import stream_file

    if use_stdin and audio:
        raise UserError("give AUDIO files or --stdin, not both")
    if not use_stdin and not audio:
        raise UserError("no audio: give AUDIO files or --stdin")
    if chunk_ms is not None and not (math.isfinite(chunk_ms) and 0 < chunk_ms <= 60_000):
        raise UserError(f"--chunk-ms must be a positive number of milliseconds up to 60000, got {chunk_ms:g}")
    if rate is not None and not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise UserError(f"--rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    stream = stream or use_stdin
    check_model_exists(model)  # in one line, before any audio is read or model loaded
    if direction and is_onnx(model):
        from edgeasr.runtimes.metadata import read_metadata

        from edgeasr.evaluation.model_logprobs import exported_mode

        exported = exported_mode(read_metadata(model))
        if direction != exported:
            raise exported_mode_error(model, exported, [direction])
        direction = None  # the file's own mode: nothing to switch
    elif direction:
        from edgeasr.models.dirdrop import parse_mode

        try:
            parse_mode(direction)
        except ValueError as e:
            raise UserError(f"--direction: {e}") from None
    if audio:  # the first file is checked before any model loads: a bad file fails fast, in one line
        check_audio_file(audio[0])
    if lm_dir:
        from edgeasr.runtimes.lm_decoder import read_lm_info

        read_lm_info(lm_dir)  # a wrong LM directory fails before the model loads
    rec = _open(model, backend, stream, threads, precision, explicit_state, direction, lm_dir, chunk_ms)
    meta = rec.meta
    if stream and not rec.streaming:
        rec.close()
        raise UserError(f"{model}: a {meta['graph_kind']} graph cannot stream; export a step graph "
                        "(edgeasr export --kind step) or transcribe without --stream")
    row_base = {"backend": rec.backend.name, "decoder": "lm" if lm_dir else "greedy", "graph": meta["graph_kind"],
                "precision": precision or meta.get("precision", "fp32")}
    try:
        if use_stdin:
            _stdin(rec, rate or rec.sample_rate, as_json)
            return
        live = _LivePartial(stream and not as_json and sys.stderr.isatty())
        for path in audio:  # read block by block: any length in bounded memory (runtimes.streaming_io)
            for n in audio_notices(path, check_audio_file(path), rec.sample_rate):
                _notice(n)
            t0 = time.perf_counter()
            row = {"audio": path, **row_base}
            result, lat, partials, dur = stream_file(rec, path, chunked=stream, on_partial=live)
            live.done()
            if stream:
                row.update({"partials": partials, "chunk_frames": rec.chunk_frames,
                            "lookahead_frames": int(rec.meta.get("lookahead_frames") or 0),
                            "chunk_latency_ms": _percentiles(lat)})
            elapsed = time.perf_counter() - t0
            row.update({"text": result.text, "duration": round(dur, 3), "rtf": round(elapsed / max(dur, 1e-9), 4),
                        "tokens": result.tokens, "timestamps": result.timestamps})
            if as_json:
                click.echo(json.dumps(row))
            else:
                click.echo(f"{path}\t{result.text}")
    finally:
        rec.close()


def _stdin(rec, rate: int, as_json: bool) -> None:
    """Live: partials printed as they change, the final transcript (with timestamps under --json) at EOF."""
    from edgeasr.runtimes.streaming_io import stream_pcm

    if rate != rec.sample_rate:
        _notice(f"stdin: resampled {rate} Hz -> {rec.sample_rate} Hz")

    def partial(text: str, seconds: float) -> None:
        click.echo(json.dumps({"type": "partial", "text": text, "time": round(seconds, 3)}) if as_json
                   else f"partial\t{text}")
        sys.stdout.flush()

    result = stream_pcm(rec, sys.stdin.buffer, rate, on_partial=partial, on_notice=_notice)
    if as_json:
        click.echo(json.dumps({"type": "final", **result.to_dict()}))
    else:
        click.echo(f"final\t{result.text}")


@click.command(name="backends")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
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
