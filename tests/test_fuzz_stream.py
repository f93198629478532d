"""Fuzz (hypothesis) of live input: raw PCM on stdin in any byte split, at any chunk size and sample rate.

The final transcript of ``transcribe --stdin`` (``runtimes.streaming_io.stream_pcm``) must equal the transcript of
the same samples read from a wav file (``stream_file``, offline, block by block), and nothing may raise but a
one-line user error (``UserError`` / the ``ValueError`` of ``Recognizer.accept_waveform``). A tiny random model keeps
it fast; its transcripts are gibberish but deterministic, which is all equality needs.
"""
import io
import math

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings, strategies as st

from edgeasr.runtimes.errors import UserError
from edgeasr.runtimes.recognizer import Recognizer
from edgeasr.runtimes.streaming_io import stream_file, stream_pcm
from test_runtimes import _model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
GOOD_RATES = [8000, 11025, 16000, 22050, 44100, 48000]
BAD_RATES = [0, -1, 1, 7, 999, 10**9]
CHUNKS_MS = [10.0, 40.0, 160.0, 320.0, 1000.0]
BAD_CHUNKS_MS = [0.0, -5.0, math.nan, math.inf, 1e9]


@pytest.fixture(scope="module")
def step_graph(tmp_path_factory):
    import torch

    from edgeasr.exporters.onnx_export import export
    from edgeasr.runtimes.features import FbankOptions
    from edgeasr.runtimes.vocab import BLANK_ID, VOCAB

    torch.set_num_threads(1)
    m = _model("rwkv")
    path = tmp_path_factory.mktemp("fuzz") / "step.onnx"
    export(m, {"features": FbankOptions().to_dict(), "vocab": list(VOCAB), "blank_id": BLANK_ID,
               "model": m.cfg.to_dict()}, path, "step", "l2r", 32, verify=False)
    return path


_RECOGNIZERS: dict = {}


def recognizer(path, chunk_ms: float) -> Recognizer:
    """One Recognizer per chunk size for the whole module (an ORT session each)."""
    if chunk_ms not in _RECOGNIZERS:
        _RECOGNIZERS[chunk_ms] = Recognizer(str(path), "ort", threads=1, chunk_ms=chunk_ms)
    return _RECOGNIZERS[chunk_ms]


class SplitReader(io.RawIOBase):
    """A pipe that hands out its bytes in the given piece sizes, whatever ``read(n)`` asks for (a short read is
    what a real pipe does)."""

    def __init__(self, data: bytes, pieces: list[int]):
        self.data, self.pieces, self.pos = data, list(pieces), 0

    def read(self, n=-1) -> bytes:
        size = self.pieces.pop(0) if self.pieces else n
        size = max(1, min(size, n if n and n > 0 else len(self.data)))
        out = self.data[self.pos:self.pos + size]
        self.pos += len(out)
        return out


def one_line(e: BaseException) -> bool:
    return isinstance(e, (UserError, ValueError)) and "\n" not in str(e) and str(e).strip() != ""


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seconds=st.floats(0.0, 1.5), rate=st.sampled_from(GOOD_RATES), chunk_ms=st.sampled_from(CHUNKS_MS),
       pieces=st.lists(st.integers(1, 9000), max_size=30), odd_byte=st.booleans(), seed=st.integers(0, 2**16))
def test_stdin_in_any_split_equals_the_file(step_graph, tmp_path_factory, seconds, rate, chunk_ms, pieces,
                                            odd_byte, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pcm = (3000 * np.sin(2 * np.pi * 300 * t) * rng.uniform(0.2, 1.0) + 800 * rng.standard_normal(len(t)))
    pcm = np.clip(pcm, -32768, 32767).astype("<i2")
    data = pcm.tobytes() + (b"\x01" if odd_byte else b"")
    rec = recognizer(step_graph, chunk_ms)
    notices = []
    live = stream_pcm(rec, SplitReader(data, pieces), rate, on_notice=notices.append)
    assert (notices == ["stdin: odd trailing byte ignored (16-bit PCM expected)"]) == odd_byte
    if not len(pcm):
        assert live.text == ""
        return
    wav = tmp_path_factory.mktemp("wav") / "same.wav"
    sf.write(wav, pcm, rate, subtype="PCM_16")
    offline, _, _, duration = stream_file(rec, wav, block_seconds=0.37)
    assert abs(duration - len(pcm) / rate) < 1e-6
    assert (live.text, live.tokens, live.timestamps) == (offline.text, offline.tokens, offline.timestamps)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rate=st.sampled_from(GOOD_RATES + BAD_RATES), chunk_ms=st.sampled_from(CHUNKS_MS + BAD_CHUNKS_MS),
       data=st.binary(max_size=4000), pieces=st.lists(st.integers(1, 700), max_size=10))
def test_nothing_raises_but_a_one_line_user_error(step_graph, rate, chunk_ms, data, pieces):
    """Any bytes (not even audio), any rate, any chunk: a transcript or a one-line user error, never a crash."""
    try:
        rec = recognizer(step_graph, chunk_ms)
        result = stream_pcm(rec, SplitReader(data, pieces), rate)
    except Exception as e:  # noqa: BLE001 - the point: which exceptions escape
        assert one_line(e), f"{type(e).__name__}: {e}"
        bad_chunk = not (math.isfinite(chunk_ms) and 0 < chunk_ms <= 60_000)
        assert bad_chunk or rate in BAD_RATES, f"{type(e).__name__}: {e}"
        return
    assert rate in GOOD_RATES or len(data) < 2  # no samples: the rate was never used
    assert isinstance(result.text, str) and len(result.timestamps) == len(result.tokens)


def test_cli_stdin_equals_the_file(step_graph, tmp_path):
    """The same through the CLI: ``transcribe --stdin --rate R`` == ``transcribe FILE`` == ``--stream``."""
    from click.testing import CliRunner

    from edgeasr.cli import main

    rng = np.random.default_rng(7)
    pcm = np.clip(2000 * rng.standard_normal(22050 * 2), -32768, 32767).astype("<i2")
    sf.write(tmp_path / "a.wav", pcm, 22050, subtype="PCM_16")
    live = CliRunner().invoke(main, ["transcribe", str(step_graph), "--stdin", "--rate", "22050"],
                              input=pcm.tobytes())
    files = [CliRunner().invoke(main, ["transcribe", str(step_graph), str(tmp_path / "a.wav"), *extra])
             for extra in ([], ["--stream"])]
    assert live.exit_code == 0 and all(f.exit_code == 0 for f in files), live.stderr
    final = live.stdout.rstrip("\n").splitlines()[-1]
    assert final.startswith("final\t")
    texts = {final.split("\t", 1)[1]} | {f.stdout.rstrip("\n").split("\t", 1)[1] for f in files}
    assert len(texts) == 1, texts
