"""Deployment runtime: backends, streaming/offline sessions, transcribe CLI.

Tiny random models (d_model 32, 2 layers) exported with ``exporters.onnx_export`` keep this light; 1 thread.
Transcripts of random models are gibberish but deterministic, which is all agreement tests need; logprobs are
compared numerically as well.
"""
import glob
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf

from edgeasr.runtimes.audio import load_audio
from edgeasr.runtimes.backends import NAMES, available, get_backend, list_backends
from edgeasr.runtimes.errors import BackendUnavailable, UserError
from edgeasr.runtimes.session import OfflineSession, StreamingSession

ROOT = Path(__file__).resolve().parents[1]
EDGEASR = [sys.executable, "-m", "edgeasr.cli"]
WAVS = sorted(glob.glob("/usr/share/pocketsphinx/test/data/librivox/*.wav"))
needs_wav = pytest.mark.skipif(not WAVS, reason="pocketsphinx-testdata not installed (make system-deps)")
SMALL = {"rwkv": {"head_size": 16}, "mha": {"heads": 2, "left_context": 8}}


def _model(mixer: str):
    import torch

    from edgeasr.models.config import EncoderConfig
    from edgeasr.models.conformer import Encoder

    torch.manual_seed(0)
    cfg = EncoderConfig(mixer=mixer, mixer_options=SMALL[mixer], d_model=32, n_layers=2, conv_kernel=5,
                        dropout=0.0, direction="l2r")
    m = Encoder(cfg).eval()
    with torch.no_grad():  # statistics of real fbank, so real audio gives non-trivial activations
        m.feat_mean.fill_(-8.0)
        m.feat_std.fill_(4.0)
    return m


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{mixer: {"step"|"full"|"chunk": onnx path, "run": checkpoint dir}}."""
    from edgeasr.exporters.onnx_export import export
    from edgeasr.models.checkpoint import save_checkpoint
    from edgeasr.runtimes.features import FbankOptions
    from edgeasr.runtimes.vocab import BLANK_ID, VOCAB

    out = {}
    for mixer in SMALL:
        d = tmp_path_factory.mktemp(mixer)
        m = _model(mixer)
        config = {"features": FbankOptions().to_dict(), "vocab": list(VOCAB), "blank_id": BLANK_ID,
                  "model": m.cfg.to_dict()}
        paths = {k: d / f"{k}.onnx" for k in ("step", "full", "chunk")}
        for kind, p in paths.items():
            export(m, config, p, kind, "l2r", 32, verify=False)
        save_checkpoint(d / "run", m, {"features": config["features"], "vocab": config["vocab"],
                                       "blank_id": BLANK_ID})
        out[mixer] = {**paths, "run": d / "run"}
    return out


@pytest.fixture(scope="module")
def audio():
    if not WAVS:
        pytest.skip("pocketsphinx-testdata not installed")
    return [load_audio(w)[0] for w in WAVS[:2]]


def stream_file(backend, samples, chunk=None, piece=1234):
    s = StreamingSession(backend, chunk, keep_logprobs=True)
    for i in range(0, len(samples), piece):
        s.accept_waveform(samples[i:i + piece])
    text = s.flush()
    return text, s.stream_logprobs(s.stream)


def run(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=kw.pop("cwd", ROOT), **kw)


# --- torch-free deployment path ------------------------------------------------------------------------------
@needs_wav
def test_deployment_path_is_torch_free(models, audio):
    step = models["rwkv"]["step"]
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        class NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is forbidden on the deployment path")
        sys.meta_path.insert(0, NoTorch())
        try:
            import torch
            raise SystemExit("torch import was not blocked")
        except ImportError:
            pass
        from edgeasr.runtimes.audio import load_audio
        from edgeasr.runtimes.backends import get_backend, list_backends
        from edgeasr.runtimes.session import StreamingSession
        samples, _ = load_audio({WAVS[0]!r})
        out = {{}}
        for name in ("ort", "openvino"):
            s = StreamingSession(get_backend(name, {str(step)!r}, threads=1))
            for i in range(0, len(samples), 1234):
                s.accept_waveform(samples[i:i + 1234])
            out[name] = s.flush()
        rows = list_backends()
        assert "torch" not in sys.modules and not any(m.startswith("torch.") for m in sys.modules)
        print(repr(out))
    """)
    p = run([sys.executable, "-c", code])
    assert p.returncode == 0, p.stderr[-2000:]
    got = eval(p.stdout.strip().splitlines()[-1])
    ref, _ = stream_file(get_backend("ort", step), audio[0])
    assert got == {"ort": ref, "openvino": ref}


# --- streaming vs offline -------------------------------------------------------------------------------------
@needs_wav
@pytest.mark.parametrize("mixer", list(SMALL))
def test_streaming_matches_offline(models, audio, mixer):
    samples = audio[0]
    off = OfflineSession(get_backend("ort", models[mixer]["full"]))
    feats = off.features(samples)
    ref = off.logprobs(feats)
    assert len(ref) == (len(feats) + 3) // 4
    step = get_backend("ort", models[mixer]["step"])
    for chunk in (4, 12, 32, 36):
        text, lp = stream_file(step, samples, chunk)
        assert lp.shape == ref.shape, chunk
        assert np.abs(lp - ref).max() < 1e-4, chunk
        assert text == off.decode(ref)
    # offline over the step graph and the chunk graph run and decode too
    assert OfflineSession(step).logprobs(feats).shape == ref.shape
    assert OfflineSession(get_backend("ort", models[mixer]["chunk"])).logprobs(feats).shape == ref.shape


@needs_wav
def test_partials_flush_and_reset(models, audio):
    s = StreamingSession(get_backend("ort", models["rwkv"]["step"]))
    partials = [p for i in range(0, len(audio[0]), 1600) if (p := s.accept_waveform(audio[0][i:i + 1600]))]
    final = s.flush()
    assert partials and all(a != b for a, b in zip(partials, partials[1:]))  # emitted only when changed
    assert final.startswith(partials[-1].rstrip()) or final == partials[-1]
    with pytest.raises(UserError, match="flushed"):
        s.accept_waveform(audio[0][:100])
    s.reset()  # same stream, new utterance: same result as the first time
    for i in range(0, len(audio[0]), 1600):
        s.accept_waveform(audio[0][i:i + 1600])
    assert s.flush() == final


# --- concurrent streams ---------------------------------------------------------------------------------------
@needs_wav
@pytest.mark.parametrize("backend, pieces", [("ort", (1600, 1600)), ("openvino", (1600, 1600)),
                                             ("ort", (1000, 1700))])
def test_two_concurrent_streams_equal_separate(models, audio, backend, pieces):
    step = models["mha"]["step"]
    separate = [stream_file(get_backend(backend, step), a) for a in audio]
    sess = StreamingSession(get_backend(backend, step), keep_logprobs=True)
    streams = [sess.stream, sess.new_stream()]
    pos = [0, 0]
    while any(p < len(a) for p, a in zip(pos, audio)):
        for k, st in enumerate(streams):
            st.feed(audio[k][pos[k]:pos[k] + pieces[k]])
            pos[k] += pieces[k]
        sess.process(streams)
    texts = sess.flush_all(streams)
    separate_chunks = sum(len(lp) for _, lp in separate) // (sess.chunk_frames // 4)
    if pieces[0] == pieces[1]:
        assert sess.chunks_run < separate_chunks * 0.8  # most chunks of the shorter stream ran batched
    for k, st in enumerate(streams):
        assert texts[k] == separate[k][0]
        lp = sess.stream_logprobs(st)
        assert lp.shape == separate[k][1].shape
        assert np.abs(lp - separate[k][1]).max() < 1e-5


# --- OpenVINO ------------------------------------------------------------------------------------------------
@needs_wav
def test_openvino_stateful_equals_explicit_state(models, audio):
    step = models["rwkv"]["step"]
    b_stateful = get_backend("openvino", step, stateful=True)
    b_explicit = get_backend("openvino", step, stateful=False)
    t1, lp1 = stream_file(b_stateful, audio[0])
    t2, lp2 = stream_file(b_explicit, audio[0])
    assert t1 == t2 and np.abs(lp1 - lp2).max() < 1e-5
    assert b_stateful.config["INFERENCE_PRECISION_HINT"] == "f32"  # never bf16 unless asked
    assert get_backend("openvino", step, precision="bf16").config["INFERENCE_PRECISION_HINT"] == "bf16"
    # reset_state between utterances: utterance B after A equals B alone
    s = StreamingSession(b_stateful)
    for a in audio:
        s.reset()
        for i in range(0, len(a), 1600):
            s.accept_waveform(a[i:i + 1600])
        last = s.flush()
    assert last == stream_file(b_explicit, audio[1])[0]


def test_openvino_static_shapes_hand_the_state_over_exactly(models):
    """A prepared chunk length runs a static-shape compiled model; switching lengths mid-stream (an utterance's
    shorter last chunk, on the dynamic-length model) hands the state over without changing a number."""
    if not available("openvino")[0]:
        pytest.skip(available("openvino")[1])
    step = models["rwkv"]["step"]
    x = np.random.default_rng(0).standard_normal((1, 32 * 4 + 12 * 3, 80)).astype(np.float32)
    chunks = [32, 32, 12, 32, 12, 32, 12]

    def run(b):
        h, out, s = b.init_state(1), [], 0
        for c in chunks:
            lp, h = b.step(x[:, s:s + c], h)
            out.append(lp)
            s += c
        return np.concatenate(out, 1), b.get_state(h)

    static = get_backend("openvino", step).activate()
    static.prepare_chunk(32)
    dynamic = get_backend("openvino", step, static_shapes=False).activate()
    dynamic.prepare_chunk(32)  # ignored: static_shapes=False
    (lp1, st1), (lp2, st2) = run(static), run(dynamic)
    assert static.mode == "stateful, static shapes" and dynamic.mode == "stateful, dynamic shapes"
    assert {f for (_, f, _) in static._compiled} == {None, 32}  # the 12-frame chunks ran the dynamic model
    assert StreamingSession(get_backend("openvino", step), 16).backend.mode == "stateful, static shapes"
    assert np.abs(lp1 - lp2).max() < 1e-5 and all(np.abs(st1[k] - st2[k]).max() < 1e-4 for k in st1)
    # set_state / get_state round trip through the pending state
    h = static.set_state(st1)
    assert all(np.array_equal(static.get_state(h)[k], st1[k]) for k in st1)


@needs_wav
@pytest.mark.parametrize("kind", ["step", "full", "chunk"])
def test_ort_and_openvino_agree(models, audio, kind):
    path = models["rwkv"][kind]
    o = OfflineSession(get_backend("ort", path))
    v = OfflineSession(get_backend("openvino", path))
    feats = o.features(audio[0])
    a, b = o.logprobs(feats), v.logprobs(feats)
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-4


@needs_wav
def test_torch_reference_matches_ort(models, audio):
    from edgeasr.evaluation.torch_backend import TorchBackend

    t_text, t_lp = stream_file(TorchBackend(models["rwkv"]["run"], kind="step"), audio[0])
    o_text, o_lp = stream_file(get_backend("ort", models["rwkv"]["step"]), audio[0])
    assert t_text == o_text and np.abs(t_lp - o_lp).max() < 1e-4
    full = OfflineSession(TorchBackend(models["rwkv"]["run"], kind="full"))
    assert np.abs(full.logprobs(full.features(audio[0])) - o_lp).max() < 1e-4


# --- availability -------------------------------------------------------------------------------------------
def test_every_backend_reports_availability():
    rows = list_backends()
    assert [r["name"] for r in rows] == list(NAMES)
    assert set(NAMES) == {"ort", "openvino", "tensorrt", "ort-cuda", "torch"}
    for r in rows:
        assert isinstance(r["available"], bool) and r["reason"].strip()
        if not r["available"]:
            assert "pip install" in r["reason"], r
    assert available("ort")[0]


def test_unavailable_backend_names_the_extra(models):
    missing = [n for n in ("tensorrt", "ort-cuda") if not available(n)[0]]
    if not missing:
        pytest.skip("tensorrt and ort-cuda are both available here")
    for name in missing:
        with pytest.raises(BackendUnavailable, match="pip install"):
            get_backend(name, models["rwkv"]["step"])


@needs_wav
def test_tensorrt_streaming_matches_ort(models, audio):
    ok, why = available("tensorrt")
    if not ok:
        pytest.skip(f"tensorrt unavailable: {why}")
    step = models["rwkv"]["step"]
    t_text, t_lp = stream_file(get_backend("tensorrt", step), audio[0])
    o_text, o_lp = stream_file(get_backend("ort", step), audio[0])
    assert t_text == o_text and np.abs(t_lp - o_lp).max() < 1e-3


@needs_wav
def test_ort_cuda_streaming_matches_ort(models, audio):
    ok, why = available("ort-cuda")
    if not ok:
        pytest.skip(f"ort-cuda unavailable: {why}")
    step = models["rwkv"]["step"]
    c_text, c_lp = stream_file(get_backend("ort-cuda", step), audio[0])
    o_text, o_lp = stream_file(get_backend("ort", step), audio[0])
    assert c_text == o_text and np.abs(c_lp - o_lp).max() < 1e-3


def test_tensorrt_backend_is_lazy_and_cache_key_is_specific(models):
    """Runs everywhere: constructing the backend touches nothing; the engine cache key changes with the GPU,
    TensorRT version, model hash and build options."""
    from edgeasr.runtimes.backends.tensorrt import TensorRTBackend

    b = TensorRTBackend(models["rwkv"]["step"], max_batch=4)
    k = b.cache_key("ab" * 32, "10.12.0", "NVIDIA H100 sm_90")
    assert k != b.cache_key("ab" * 32, "10.13.0", "NVIDIA H100 sm_90")
    assert k != b.cache_key("ab" * 32, "10.12.0", "NVIDIA L4 sm_89")
    assert k != b.cache_key("cd" * 32, "10.12.0", "NVIDIA H100 sm_90")
    assert k != TensorRTBackend(models["rwkv"]["step"], max_batch=8).cache_key("ab" * 32, "10.12.0",
                                                                               "NVIDIA H100 sm_90")
    shapes = b._profile_shapes()
    assert shapes["x"][0][1] == 4 and shapes["x"][2][0] == 4
    assert all(mn[1:] == mx[1:] for n, (mn, _, mx) in shapes.items() if n != "x")  # states fixed but batch


# --- resampling -------------------------------------------------------------------------------------------------
def test_stream_resampler_equals_whole_signal():
    from edgeasr.runtimes.audio import resample
    from edgeasr.runtimes.resample import StreamResampler

    rng = np.random.default_rng(0)
    x = (rng.standard_normal(44100) * 0.3).astype(np.float32)
    r = StreamResampler(44100, 16000)
    out, i = [], 0
    for n in rng.integers(1, 3000, 200):
        out.append(r.accept(x[i:i + n]))
        i += n
    out.append(r.accept(x[i:]))
    out.append(r.flush())
    y = np.concatenate(out)
    ref = resample(x, 44100, 16000)
    assert len(y) == len(ref) and np.abs(y - ref).max() < 1e-6


# --- CLI --------------------------------------------------------------------------------------------------------
@needs_wav
def test_cli_transcribe_json(models, audio):
    off = OfflineSession(get_backend("ort", models["rwkv"]["full"]))
    ref = off.transcribe(audio[0])
    p = run(EDGEASR + ["transcribe", str(models["rwkv"]["step"]), WAVS[0], "--stream", "--chunk-ms", "200",
                       "--json", "--threads", "1"])
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout.strip().splitlines()[-1])
    assert row["text"] == ref and row["backend"] == "ort" and row["chunk_frames"] == 20 and row["duration"] > 1
    assert row["partials"] >= 1 and "p95" in row["chunk_latency_ms"]
    p = run(EDGEASR + ["transcribe", str(models["rwkv"]["full"]), WAVS[0], "--backend", "openvino", "--json"])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["text"] == ref
    p = run(EDGEASR + ["transcribe", str(models["rwkv"]["run"]), WAVS[0], "--json", "--direction", "l2r"])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["text"] == ref and json.loads(p.stdout)["backend"] == "torch"
    # an ONNX file decodes in the mode it was exported in: naming that mode is fine, another one is a clear error
    p = run(EDGEASR + ["transcribe", str(models["rwkv"]["step"]), WAVS[0], "--json", "--direction", "l2r"])
    assert p.returncode == 0 and json.loads(p.stdout)["text"] == ref, p.stderr
    p = run(EDGEASR + ["transcribe", str(models["rwkv"]["step"]), WAVS[0], "--direction", "bi"])
    assert p.returncode == 2 and "exported in l2r mode" in p.stderr and len(p.stderr.strip().splitlines()) == 1


@needs_wav
def test_cli_transcribe_stdin_prints_partials(models, audio):
    pcm = (np.clip(audio[0], -1, 1) * 32767).astype("<i2").tobytes()
    ref, _ = stream_file(get_backend("ort", models["rwkv"]["step"]),
                         np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0)
    p = subprocess.run(EDGEASR + ["transcribe", str(models["rwkv"]["step"]), "--stdin", "--rate", "16000", "--json"],
                       input=pcm, capture_output=True, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr.decode()
    rows = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert rows[-1]["type"] == "final" and sum(r["type"] == "partial" for r in rows) >= 2
    texts = [r["text"] for r in rows if r["type"] == "partial"]
    assert all(a != b for a, b in zip(texts, texts[1:]))
    assert rows[-1]["text"] == ref  # the same samples fed in different pieces: same transcript


@needs_wav
def test_cli_resamples_and_downmixes_with_notices(models, tmp_path, audio):
    from edgeasr.runtimes.audio import resample

    st = tmp_path / "stereo44k.wav"
    x = resample(audio[0], 16000, 44100)
    sf.write(st, np.stack([x, x], 1), 44100, subtype="PCM_16")
    p = run(EDGEASR + ["transcribe", str(models["rwkv"]["full"]), str(st), "--json"])
    assert p.returncode == 0, p.stderr
    assert "downmixed" in p.stderr and "resampled 44100 Hz -> 16000 Hz" in p.stderr


def test_cli_backends(tmp_path):
    p = run(EDGEASR + ["backends", "--json"])
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert {r["name"] for r in rows} == set(NAMES)
    p = run(EDGEASR + ["backends"])
    assert p.returncode == 0 and "tensorrt" in p.stdout


def _strip_metadata(src: Path, dst: Path):
    m = onnx.load(str(src))
    del m.metadata_props[:]
    onnx.save(m, str(dst))


def _wrong_state_shape(src: Path, dst: Path):
    m = onnx.load(str(src))
    for p in m.metadata_props:
        if p.key == "edgeasr.states":
            states = json.loads(p.value)
            states[0]["shape"] = [s + 1 for s in states[0]["shape"]]
            p.value = json.dumps(states)
    onnx.save(m, str(dst))


@needs_wav
@pytest.mark.parametrize("case", ["no-metadata", "wrong-state-shape", "corrupt-audio", "not-installed",
                                  "not-onnx", "full-graph-stream"])
def test_cli_bad_input_is_one_line(models, tmp_path, case):
    model, wav, extra = str(models["rwkv"]["step"]), WAVS[0], []
    needle = {"no-metadata": "no edgeasr metadata", "wrong-state-shape": "state subsampling.conv1.cache",
              "corrupt-audio": "bad.wav", "not-installed": "pip install", "not-onnx": "not a readable ONNX",
              "full-graph-stream": "cannot stream"}[case]
    if case == "no-metadata":
        model = str(tmp_path / "plain.onnx")
        _strip_metadata(models["rwkv"]["step"], Path(model))
    elif case == "wrong-state-shape":
        model = str(tmp_path / "wrong.onnx")
        _wrong_state_shape(models["rwkv"]["step"], Path(model))
        extra = ["--stream"]
    elif case == "corrupt-audio":
        wav = str(tmp_path / "bad.wav")
        Path(wav).write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    elif case == "not-installed":
        missing = [n for n in ("tensorrt", "ort-cuda") if not available(n)[0]]
        if not missing:
            pytest.skip("every backend is installed here")
        extra = ["--backend", missing[0]]
    elif case == "not-onnx":
        model = str(tmp_path / "junk.onnx")
        Path(model).write_bytes(b"\x00garbage" * 10)
    elif case == "full-graph-stream":
        model, extra = str(models["rwkv"]["full"]), ["--stream"]
    p = run(EDGEASR + ["transcribe", model, wav, *extra])
    assert p.returncode != 0
    assert needle in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


# --- long stream ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sixty_minute_stream_constant_memory(models):
    """60 minutes of audio streamed through ORT in 100 ms pieces: RSS after the first 5 minutes grows <= 5 %."""
    code = textwrap.dedent(f"""
        import numpy as np, resource
        from edgeasr.runtimes.backends import get_backend
        from edgeasr.runtimes.session import StreamingSession
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096
        s = StreamingSession(get_backend("ort", {str(models['rwkv']['step'])!r}, threads=1))
        rng = np.random.default_rng(0)
        t = np.arange(1600) / 16000
        marks = {{}}
        for i in range(36000):  # 100 ms pieces
            piece = 0.1 * np.sin(2 * np.pi * (200 + (i % 50) * 20) * t) + 0.01 * rng.standard_normal(1600)
            s.accept_waveform(piece.astype(np.float32))
            if i in (3000, 35999):
                marks[i] = rss()
        s.flush()
        print(marks[3000], marks[35999], s.stream.logprob_frames)
    """)
    p = run([sys.executable, "-c", code], timeout=1800)
    assert p.returncode == 0, p.stderr[-2000:]
    at5, at60, frames = map(int, p.stdout.split())
    print(f"RSS at 5 min {at5 / 2**20:.1f} MiB, at 60 min {at60 / 2**20:.1f} MiB, {frames} encoder frames")
    assert frames >= 60 * 60 * 100 // 4 - 1
    assert at60 <= at5 * 1.05


# --- the shipped model: same transcripts on every available backend -------------------------------------------
def test_shipped_model_same_transcripts_every_backend(tmp_path):
    """fp32 step graph of the shipped default model, streamed on every available ONNX backend, and the torch
    reference: identical transcripts on the real LibriVox clips (skips until a model is shipped)."""
    from edgeasr import pretrained
    from edgeasr.evaluation.torch_backend import TorchBackend

    if pretrained.resolve_model_dir("default") is None or not WAVS:
        pytest.skip("no shipped default model (toolchain/pretrained) or no pocketsphinx-testdata")
    from edgeasr.exporters.onnx_export import export
    from edgeasr.pretrained import load_model

    encoder, config = load_model("default")
    step = tmp_path / "default.step.onnx"
    export(encoder, config, step, "step", "l2r", 32, verify=False)
    names = ["ort", "openvino"] + [n for n in ("ort-cuda", "tensorrt") if available(n)[0]]
    for wav in WAVS[:2]:
        samples, _ = load_audio(wav)
        ref, _ = stream_file(TorchBackend("default", kind="step"), samples)
        for name in names:
            assert stream_file(get_backend(name, step), samples)[0] == ref, (name, wav)


# --- TensorRT backend bookkeeping, against a fake TensorRT (runs everywhere) ----------------------------------
def _fake_tensorrt_modules():
    """In-process stand-ins for ``tensorrt`` and ``cuda.bindings.runtime``: "device" memory is host memory and the
    "engine" is ONNX Runtime reading and writing the bound addresses. This checks the backend's own bookkeeping
    (profile, cache, shapes, addresses, ping-pong states, copies) — it is NOT TensorRT and proves nothing about it."""
    import ctypes
    import types

    import onnxruntime as ort

    mem = {}
    cudart = types.ModuleType("cuda.bindings.runtime")
    cudart.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def malloc(n):
        buf = np.zeros(n, np.uint8)
        mem[buf.ctypes.data] = buf
        return 0, buf.ctypes.data

    cudart.cudaMalloc = malloc
    cudart.cudaFree = lambda p: (mem.pop(p) is not None and 0,)
    cudart.cudaMemcpyAsync = lambda dst, src, n, kind, stream: (ctypes.memmove(dst, src, n) and 0,)
    cudart.cudaStreamCreate = lambda: (0, 7)
    cudart.cudaStreamSynchronize = cudart.cudaStreamDestroy = lambda s: (0,)
    cudart.cudaGetDeviceCount = lambda: (0, 1)
    cudart.cudaGetDeviceProperties = lambda i: (0, types.SimpleNamespace(name=b"Fake GPU", major=9, minor=0))
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime, cuda.bindings = cudart, bindings

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.12.0.36"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.DataType = types.SimpleNamespace(FLOAT=np.float32, INT64=np.int64)
    trt.nptype = lambda t: t
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    trt.BuilderFlag = types.SimpleNamespace(FP16=1)
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    trt.builds = []

    class Parser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse(self, data, path=None):
            self.network.data = data
            return True

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            return types.SimpleNamespace(data=None)

        def create_builder_config(self):
            return types.SimpleNamespace(set_memory_pool_limit=lambda *a: None, set_flag=lambda f: None,
                                         add_optimization_profile=lambda p: None)

        def create_optimization_profile(self):
            p = types.SimpleNamespace(shapes={})
            p.set_shape = lambda name, mn, opt, mx: p.shapes.__setitem__(name, (mn, opt, mx))
            return p

        def build_serialized_network(self, network, config):
            trt.builds.append(1)
            return network.data

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addr = engine, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def _run(self):
            feeds = {}
            for i in self.engine.sess.get_inputs():
                dt = np.int64 if "int64" in i.type else np.float32
                n = int(np.prod(self.shapes[i.name])) * np.dtype(dt).itemsize
                raw = (ctypes.c_char * n).from_address(self.addr[i.name])
                feeds[i.name] = np.frombuffer(raw, dt).reshape(self.shapes[i.name]).copy()
            names = [o.name for o in self.engine.sess.get_outputs()]
            return dict(zip(names, self.engine.sess.run(names, feeds)))

        def get_tensor_shape(self, name):
            return self._run()[name].shape

        def execute_async_v3(self, stream):
            ins = {self.addr[i.name] for i in self.engine.sess.get_inputs()}
            outs = {self.addr[o.name] for o in self.engine.sess.get_outputs()}
            assert not ins & outs, "a buffer is bound as both input and output"
            for name, v in self._run().items():
                v = np.ascontiguousarray(v)
                ctypes.memmove(self.addr[name], v.ctypes.data, v.nbytes)
            return True

    class Engine:
        def __init__(self, blob):
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            self.sess = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
            self.io = [i.name for i in self.sess.get_inputs()] + [o.name for o in self.sess.get_outputs()]
            self.num_io_tensors = len(self.io)

        def get_tensor_name(self, i):
            return self.io[i]

        def get_tensor_mode(self, name):
            return "in" if name in {i.name for i in self.sess.get_inputs()} else "out"

        def get_tensor_dtype(self, name):
            arg = next(a for a in self.sess.get_inputs() + self.sess.get_outputs() if a.name == name)
            return np.int64 if "int64" in arg.type else np.float32

        def get_tensor_shape(self, name):
            arg = next(a for a in self.sess.get_inputs() + self.sess.get_outputs() if a.name == name)
            return [d if isinstance(d, int) else -1 for d in arg.shape]

        def create_execution_context(self):
            return Context(self)

    trt.Builder, trt.OnnxParser, trt.Engine = Builder, Parser, Engine
    trt.Runtime = type("Runtime", (), {"__init__": lambda self, lg: None,
                                       "deserialize_cuda_engine": lambda self, blob: Engine(blob)})
    return {"tensorrt": trt, "cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": cudart}


@needs_wav
def test_tensorrt_backend_bookkeeping_with_fake_tensorrt(models, audio, monkeypatch, tmp_path):
    fakes = _fake_tensorrt_modules()
    for name, mod in fakes.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setenv("EDGEASR_TRT_CACHE", str(tmp_path / "cache"))
    from edgeasr.runtimes.backends.tensorrt import TensorRTBackend

    assert TensorRTBackend.available() == (True, "tensorrt 10.12.0.36 on Fake GPU sm_90")
    step = models["rwkv"]["step"]
    o_text, o_lp = stream_file(get_backend("ort", step), audio[0])
    b = get_backend("tensorrt", step, max_batch=2)
    t_text, t_lp = stream_file(b, audio[0])
    assert t_text == o_text and np.abs(t_lp - o_lp).max() < 1e-5
    assert not b.cache_hit and b.engine_path.is_file() and b.engine_path.with_suffix(".json").is_file()
    b2 = get_backend("tensorrt", step, max_batch=2).activate()
    assert b2.cache_hit and len(fakes["tensorrt"].builds) == 1  # second load: from the on-disk engine cache
    # two concurrent streams batched through the ping-pong buffers equal separate ones
    sess = StreamingSession(b2, keep_logprobs=True)
    streams = [sess.stream, sess.new_stream()]
    for i in range(0, max(len(a) for a in audio), 1600):
        for k, st in enumerate(streams):
            st.feed(audio[k][i:i + 1600])
        sess.process(streams)
    sess.flush_all(streams)
    assert streams[0].text == o_text
    assert np.abs(sess.stream_logprobs(streams[0]) - o_lp).max() < 1e-5
    full = OfflineSession(get_backend("tensorrt", models["rwkv"]["full"], max_batch=2))
    assert np.abs(full.logprobs(full.features(audio[0])) - o_lp).max() < 1e-4
    with pytest.raises(UserError, match="outside the engine profile"):
        b2.step(np.zeros((3, 32, 80), np.float32), b2.init_state(1))


def test_report_files_are_atomic_and_out_dirs_checked_without_creating(tmp_path):
    from edgeasr.runtimes.files import atomic_write, out_dir_problem, write_report_files

    assert out_dir_problem(tmp_path / "a" / "b") is None and not (tmp_path / "a").exists()  # checking creates nothing
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "exists and is not a directory" in out_dir_problem(blocker)
    assert "cannot create output directory" in out_dir_problem(blocker / "sub")
    paths = write_report_files(tmp_path / "a" / "b", "r", {"json": "{}\n", "md": "# ü\n"})
    assert paths["md"].read_text(encoding="utf-8") == "# ü\n" and sorted(os.listdir(tmp_path / "a" / "b")) == [
        "r.json", "r.md"]
    # a write whose check fails leaves the old file and no temp file behind
    def refuse(_tmp):
        raise ValueError("bad")
    with pytest.raises(ValueError):
        atomic_write(paths["json"], b"half", check=refuse)
    assert paths["json"].read_text() == "{}\n" and sorted(os.listdir(tmp_path / "a" / "b")) == ["r.json", "r.md"]
