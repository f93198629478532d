"""``edgeasr.Recognizer``: the embeddable streaming API, on the shipped flagship's step graph and real speech."""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import edgeasr
from edgeasr.runtimes.audio import load_audio, resample

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "and the lord spake unto moses saying speak unto the children of israel"


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """The shipped default exported as a step graph (l2r) and a full graph (bi)."""
    from edgeasr.exporters.onnx_export import export
    from edgeasr.pretrained import load_model

    d = tmp_path_factory.mktemp("rec")
    out = {}
    for kind, direction in (("step", "l2r"), ("full", "bi")):
        model, config = load_model("default", direction)
        out[kind] = d / f"{kind}.onnx"
        export(model, config, out[kind], kind, direction, 32, verify=False)
    return out


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Two seconds of real TTS speech at 16 kHz, then 3 s of silence."""
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed (make system-deps)")
    wav = tmp_path_factory.mktemp("speech") / "s.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), SENTENCE], check=True)
    x, _ = load_audio(wav, 16000)
    return np.concatenate([x, np.zeros(48000, np.float32)])


def _stream(rec, x, rate, piece):
    s = rec.create_stream()
    partials = [p for i in range(0, len(x), piece) if (p := s.accept_waveform(rate, x[i:i + piece])) is not None]
    return s.finish(), partials


def test_streaming_in_any_pieces_equals_whole(graphs, speech):
    with edgeasr.Recognizer(str(graphs["step"])) as rec:
        whole = rec.transcribe(speech, 16000)
        for piece in (160, 1234, 8000):
            result, partials = _stream(rec, speech, 16000, piece)
            assert result == whole
            assert partials and all(a != b for a, b in zip(partials, partials[1:]))
    assert len(whole.text.split()) >= 8 and whole.text.split()[0] == "and"


def test_tokens_and_timestamps(graphs, speech):
    with edgeasr.Recognizer(str(graphs["step"])) as rec:
        r = rec.transcribe(speech, 16000)
    assert "".join(r.tokens).split() == r.text.split()
    assert len(r.timestamps) == len(r.tokens) and r.timestamps == sorted(r.timestamps)
    assert 0 <= r.timestamps[0] < 1.0 and r.timestamps[-1] < len(speech) / 16000 - 2.0  # speech ends before silence
    assert json.loads(json.dumps(r.to_dict()))["tokens"] == r.tokens


def test_any_rate_and_int16_in(graphs, speech):
    import jiwer

    with edgeasr.Recognizer(str(graphs["step"])) as rec:
        ref = rec.transcribe(speech, 16000).text
        pcm = (speech * 32767).astype(np.int16)
        as_int = _stream(rec, pcm, 16000, 999)[0].text
        as_float = _stream(rec, pcm.astype(np.float32) / 32768.0, 16000, 999)[0].text
        assert as_int == as_float
        for rate in (22050, 44100, 48000):  # (8 kHz loses the band above 4 kHz: not comparable)
            got = _stream(rec, resample(speech, 16000, rate), rate, 2048)[0].text
            assert jiwer.cer(ref, got) < 0.1, (rate, got)


def test_endpoint_after_trailing_silence(graphs, speech):
    rules = edgeasr.EndpointRules(rule2_min_trailing_silence=1.0)
    with edgeasr.Recognizer(str(graphs["step"]), endpoint=rules) as rec:
        s = rec.create_stream()
        seen = []
        for i in range(0, len(speech), 1600):
            s.accept_waveform(16000, speech[i:i + 1600])
            seen.append((i / 16000, s.is_endpoint()))
        first = next(t for t, e in seen if e)
        speech_end = len(speech) / 16000 - 3.0
        assert speech_end + 0.5 <= first <= speech_end + 2.5, seen
        s.reset()
        assert not s.is_endpoint() and s.result.text == ""


def test_decode_streams_batches_equal_separate(graphs, speech):
    other = speech[::-1].copy()
    with edgeasr.Recognizer(str(graphs["step"])) as rec:
        ref = [rec.transcribe(x, 16000) for x in (speech, other)]
        streams = [rec.create_stream(), rec.create_stream()]
        for i in range(0, len(speech), 2500):
            for s, x in zip(streams, (speech, other)):
                s.accept_waveform(16000, x[i:i + 2500], decode=False)
            rec.decode_streams(streams)
        assert [s.finish() for s in streams] == ref


def test_full_graph_decodes_at_finish(graphs, speech):
    with edgeasr.Recognizer(str(graphs["full"])) as rec:
        assert not rec.streaming
        result, partials = _stream(rec, speech, 16000, 4000)
        assert partials == [] and result == rec.transcribe(speech, 16000)
        assert len(result.text.split()) >= 8 and result.timestamps == sorted(result.timestamps)


@pytest.mark.parametrize("rate,samples,words", [
    (0, np.zeros(10, np.float32), "sample_rate 0"),
    (-16000, np.zeros(10, np.float32), "sample_rate -16000"),
    (16000.5, np.zeros(10, np.float32), "whole number"),
    (float("nan"), np.zeros(10, np.float32), "whole number"),
    ("16000", np.zeros(10, np.float32), "must be a number"),
    (16000, np.zeros((2, 3, 4), np.float32), "1-D"),
    (16000, np.array([0.1, np.nan], np.float32), "NaN"),
    (16000, np.zeros(10, np.int32), "int32"),
])
def test_bad_input_is_one_line_and_leaves_the_stream_unchanged(graphs, speech, rate, samples, words):
    with edgeasr.Recognizer(str(graphs["step"])) as rec:
        ref = rec.transcribe(speech, 16000)
        s = rec.create_stream()
        half = len(speech) // 2
        s.accept_waveform(16000, speech[:half])
        with pytest.raises(ValueError) as e:
            s.accept_waveform(rate, samples)
        assert words in str(e.value) and "\n" not in str(e.value)
        s.accept_waveform(16000, speech[half:])
        assert s.finish() == ref


def test_rate_change_within_an_utterance_is_refused(graphs, speech):
    with edgeasr.Recognizer(str(graphs["step"])) as rec:
        s = rec.create_stream()
        s.accept_waveform(16000, speech[:1600])
        with pytest.raises(ValueError, match="changed within an utterance"):
            s.accept_waveform(8000, speech[:800])
        s.reset()
        s.accept_waveform(8000, speech[:800])  # a new utterance may use another rate


def test_missing_model_and_bad_chunk_are_user_errors(graphs, tmp_path):
    with pytest.raises(edgeasr.UserError, match="no such ONNX file"):
        edgeasr.Recognizer(str(tmp_path / "nope.onnx"))
    with pytest.raises(edgeasr.UserError, match="positive number of milliseconds"):
        edgeasr.Recognizer(str(graphs["step"]), chunk_ms=float("inf"))
    with edgeasr.Recognizer(str(graphs["step"]), chunk_ms=0.001) as rec:
        assert rec.chunk_frames == 4  # the smallest chunk the graph takes


def test_transcribe_stream_shows_partials_on_a_terminal(graphs, speech, tmp_path):
    """On a terminal, `transcribe FILE --stream` rewrites the growing partial in place on stderr; piped, it does not."""
    import os
    import pty
    import sys

    import soundfile as sf

    wav = tmp_path / "s.wav"
    sf.write(wav, speech, 16000)
    args = [sys.executable, "-m", "edgeasr.cli", "transcribe", str(graphs["step"]), str(wav), "--stream"]
    master, slave = pty.openpty()
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=slave, cwd=ROOT, timeout=300)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert p.returncode == 0
    final = p.stdout.decode().strip().split("\t")[1]
    updates = [u for u in shown.decode().split("\r") if u.strip().startswith("[")]
    assert len(updates) >= 3 and final.startswith(updates[-1].split("] ", 1)[1].strip().split()[0])
    piped = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert piped.stdout.strip().split("\t")[1] == final and "\r" not in piped.stderr
