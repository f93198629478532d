"""chunk-bi with a look-ahead (issue 30): each call holds a chunk and the next chunk's first R frames; every
module computes outputs over all of them but hands on its state from the chunk's end, so the next call reads the
R frames again as its own chunk and no context leaks further than R. The masked one-pass step equals running each
stateful module on the chunk and then on the look-ahead from the chunk's state (1e-5, over chunk sizes,
look-aheads and call lengths); outputs never depend on frames past chunk + R; the ONNX step graph streams on ONNX
Runtime and OpenVINO like torch; mode strings, export options and bad input give one-line errors."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from edgeasr.cli import main
from edgeasr.exporters.onnx_export import ExportError, export
from edgeasr.exporters.trt_lint import lint_model
from edgeasr.exporters.verify import step_windows
from edgeasr.models.checkpoint import load_checkpoint
from edgeasr.models.conformer import _pre, _sub
from edgeasr.models.dirdrop import mode_string, parse_lookahead, parse_mode
from edgeasr.runtimes.backends import available, get_backend
from edgeasr.runtimes.metadata import read_metadata
from edgeasr.runtimes.session import StreamingSession
from test_encoder import small_encoder
from test_export import save_tiny

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
BIDIRECTIONAL = ("rwkv", "mamba2")


def feats(B: int, T: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, 80, generator=g) * 3 + 10


def split_step(enc, x, state, C):
    """The look-ahead call spelled out: each stateful module runs the chunk's frames, then the look-ahead's from
    the state the chunk left (which is the state handed on); R2L runs over the whole call from its end."""
    c = C // 4
    xn = enc.normalize(x)
    h, ss = enc.subsampling.step(xn[:, :C], _sub(state, "subsampling"))
    if x.shape[1] > C:
        h = torch.cat([h, enc.subsampling.step(xn[:, C:], ss)[0]], 1)
    new = _pre(ss, "subsampling")
    for i, layer in enumerate(enc.layers):
        st = _sub(state, f"layers.{i}")
        y = h + 0.5 * layer.ff1(h)
        m, yn = layer.mixer, layer.mixer_norm(y)
        l2r, ms = m._step_l2r(yn[:, :c], _sub(st, "mixer"))
        if yn.shape[1] > c:
            l2r = torch.cat([l2r, m._step_l2r(yn[:, c:], ms)[0]], 1)
        y = y + 0.5 * (l2r + m._step_r2l(yn))
        conv, cs = layer.conv.step(y[:, :c], _sub(st, "conv"))
        if y.shape[1] > c:
            conv = torch.cat([conv, layer.conv.step(y[:, c:], cs)[0]], 1)
        y = y + conv
        h = layer.norm_out(y + 0.5 * layer.ff2(y))
        new.update(_pre({**_pre(ms, "mixer"), **_pre(cs, "conv")}, f"layers.{i}"))
    return F.log_softmax(enc.ctc(h), -1), h, new


@pytest.mark.parametrize("mixer", BIDIRECTIONAL)
@pytest.mark.parametrize("chunk,lookahead", [(8, 4), (16, 8), (16, 32), (32, 16)])
def test_lookahead_step_equals_the_chunk_then_the_lookahead(mixer, chunk, lookahead):
    enc = small_encoder(mixer)
    enc.set_direction(f"chunk-bi:{chunk * 10}ms+{lookahead * 10}ms")
    assert (enc.chunk_frames, enc.lookahead_frames) == (chunk, lookahead)
    torch.manual_seed(1)
    state = {k: torch.randn_like(v) * 0.3 for k, v in enc.initial_state(2).items()}  # a mid-stream state
    worst = 0.0
    for T in (chunk + lookahead, chunk + 4, chunk, max(4, chunk - 4)):  # full call, short look-ahead, none
        x = feats(2, T, T)
        with torch.no_grad():
            got, ref = enc.step(x, state), split_step(enc, x, state, chunk)
        worst = max(worst, (got[0] - ref[0]).abs().max().item(), (got[1] - ref[1]).abs().max().item(),
                    *((got[2][k] - ref[2][k]).abs().max().item() for k in ref[2]))
    print(f"{mixer} chunk {chunk} + look-ahead {lookahead}: max |masked - split| {worst:.2e}")
    assert worst <= 1e-5


@pytest.mark.parametrize("mixer", BIDIRECTIONAL)
def test_no_context_leaks_past_the_lookahead(mixer):
    enc = small_encoder(mixer)
    C, R, T = 16, 8, 70
    enc.set_direction(f"chunk-bi:{C * 10}ms+{R * 10}ms")
    x = feats(1, T, 3)
    with torch.no_grad():
        base = enc(x, torch.tensor([T]))[0]
        for i in range(3):  # chunk i's outputs read frames < (i + 1) C + R and nothing later
            edge = (i + 1) * C + R
            late, inside = x.clone(), x.clone()
            late[:, edge:] += 5.0
            inside[:, edge - 4:edge] += 5.0
            out_late, out_inside = enc(late, torch.tensor([T]))[0], enc(inside, torch.tensor([T]))[0]
            n = (i + 1) * C // 4
            assert (out_late[:, :n] - base[:, :n]).abs().max().item() == 0.0
            assert (out_inside[:, i * C // 4:n] - base[:, i * C // 4:n]).abs().max().item() > 1e-3
        enc.set_direction(f"chunk-bi:{C * 10}ms")  # without it, the chunk's last frame sees nothing ahead
        plain = enc(x, torch.tensor([T]))[0]
        assert (plain[:, :C // 4] - base[:, :C // 4]).abs().max().item() > 1e-3


@pytest.mark.parametrize("mixer", BIDIRECTIONAL)
def test_forward_matches_the_runtime_schedule_and_batches(mixer):
    enc = small_encoder(mixer)
    enc.set_direction("chunk-bi:160ms+80ms")
    x = feats(5, 90, 4)
    lens = torch.tensor([61, 37, 5, 90, 24])  # utterances leave the batch at different calls
    with torch.no_grad():
        lp, out_lens, _ = enc(x, lens)
        assert out_lens.tolist() == [16, 10, 2, 23, 6]
        for b in range(5):  # each utterance alone, by the schedule a runtime uses
            T, state, parts = int(lens[b]), enc.initial_state(1), []
            for start, end, emit in step_windows(T, 16, 8):
                xb = F.pad(x[b:b + 1, start:end], (0, 0, 0, -(end - start) % 4))
                out, _, state = enc.step(xb, state)
                parts.append(out[:, :emit])
            ref = torch.cat(parts, 1)[0]
            assert (lp[b, :int(out_lens[b])] - ref).abs().max().item() <= 1e-5  # batched: summation order only
            assert (lp[b, int(out_lens[b]):] == 0).all()


def test_windows_cover_every_frame_once():
    for T in range(1, 90):
        emitted = 0
        for start, end, emit in step_windows(T, 16, 8):
            assert start == 4 * emitted and end <= T
            emitted += emit if emit is not None else -(-(end - start) // 4)
        assert emitted == -(-T // 4)


def test_mode_strings():
    assert parse_mode("chunk-bi:640ms+160ms") == ("chunk-bi", 64)
    assert parse_lookahead("chunk-bi:640ms+160ms") == 16 and parse_lookahead("chunk-bi:640ms") == 0
    assert mode_string("chunk-bi", 64, 16) == "chunk-bi:640ms+160ms" and mode_string("bi", None) == "bi"
    for bad, needle in (("l2r+160ms", "only chunk-bi"), ("chunk-bi+160ms", "only chunk-bi"),
                        ("chunk-bi:640ms+150ms", "multiple of 4"), ("chunk-bi:640ms+x", "milliseconds")):
        with pytest.raises(ValueError, match=needle):
            parse_mode(bad)
    enc = small_encoder("rwkv")
    enc.set_direction("chunk-bi:640ms+160ms")
    assert enc.mode == "chunk-bi:640ms+160ms"
    enc.set_direction("chunk-bi")  # the bare mode keeps the remembered chunk and look-ahead
    assert enc.mode == "chunk-bi:640ms+160ms"
    enc.set_direction("chunk-bi:320ms")
    assert enc.mode == "chunk-bi:320ms" and enc.lookahead_frames == 0
    enc.set_direction("chunk-bi:640ms+160ms")
    enc.set_direction("l2r")
    assert enc.lookahead_frames == 0
    with pytest.raises(ValueError, match="bidirectional"):
        small_encoder("mha").set_direction("chunk-bi:640ms+160ms")


# --- ONNX ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def la_graph(tmp_path_factory):
    root = tmp_path_factory.mktemp("la")
    ckpt = save_tiny(root / "rwkv", "rwkv")
    path = root / "step.la.onnx"
    res = CliRunner().invoke(main, ["export", str(ckpt), "--kind", "step", "--direction", "chunk-bi",
                                    "--chunk-frames", "16", "--lookahead-frames", "8", "--out", str(path), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["lookahead_frames"] == 8 and summary["max_abs_error"] <= 1e-4
    return ckpt, path


@pytest.mark.parametrize("backend", ["ort", "openvino"])
def test_step_graph_streams_like_torch(la_graph, backend):
    ok, why = available(backend)
    if not ok:
        pytest.skip(f"{backend} unavailable: {why}")
    ckpt, path = la_graph
    meta = read_metadata(path)
    assert (meta["direction"], meta["chunk_frames"], meta["lookahead_frames"]) == ("chunk-bi", 16, 8)
    assert not [p for p in lint_model(path) if p.severity == "error"]  # TensorRT-ready like the other graphs
    model, _ = load_checkpoint(ckpt)
    model.set_direction("chunk-bi:160ms+80ms")
    sess = StreamingSession(get_backend(backend, path, threads=1), keep_logprobs=True)
    worst = 0.0
    for T in (7, 24, 61, 100):  # under one call, exactly one, a short last call, a look-ahead-only last call
        x = feats(1, T, T)
        stream = sess.new_stream()
        for a in range(0, T, 5):  # frames arrive a few at a time
            stream.accept_features(x[0, a:a + 5].numpy())
        stream.flush()
        got = sess.stream_logprobs(stream)
        with torch.no_grad():
            ref = model(x, torch.tensor([T]))[0][0].numpy()
        assert got.shape == ref.shape == ((T + 3) // 4, ref.shape[1])
        worst = max(worst, float(np.abs(got - ref).max()))
        stream.close()
    print(f"{backend} look-ahead stream vs torch: {worst:.2e}")
    assert worst <= 1e-4


def test_streams_batched_equal_streams_alone(la_graph):
    _, path = la_graph
    xs = [feats(1, T, T)[0].numpy() for T in (50, 83)]
    alone = []
    for x in xs:
        sess = StreamingSession(get_backend("ort", path, threads=1), keep_logprobs=True)
        sess.stream.accept_features(x)
        sess.flush()
        alone.append(sess.stream_logprobs(sess.stream))
    sess = StreamingSession(get_backend("ort", path, threads=1), keep_logprobs=True)
    streams = [sess.new_stream() for _ in xs]
    for a in range(0, 83, 9):
        for s, x in zip(streams, xs):
            s.feed_features(x[a:a + 9])
        sess.process(streams)
    for s, ref in zip(streams, alone):
        s.flush()
        assert np.abs(sess.stream_logprobs(s) - ref).max() <= 1e-5


def test_lookahead_errors_are_one_line(la_graph, tmp_path):
    ckpt, _ = la_graph
    out = str(tmp_path / "x.onnx")
    cases = (
        (["--kind", "step", "--direction", "chunk-bi", "--chunk-frames", "16", "--lookahead-frames", "6"],
         "multiple of 4"),
        (["--kind", "full", "--direction", "chunk-bi", "--chunk-frames", "16", "--lookahead-frames", "8"],
         "step graph"),
        (["--kind", "step", "--direction", "l2r", "--lookahead-frames", "8"], "step graph"),
    )
    for args, needle in cases:
        res = CliRunner().invoke(main, ["export", str(ckpt), *args, "--out", out])
        lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.output
        assert needle in lines[0] and "Traceback" not in res.output
    model, config = load_checkpoint(ckpt)
    with pytest.raises(ExportError, match="step graph"):
        export(model, config, tmp_path / "y.onnx", "full", "chunk-bi", 16, lookahead_frames=8)
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()
    res = CliRunner().invoke(main, ["eval", str(ckpt), "--test", "nothing.jsonl", "--direction", "l2r+160ms"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    from edgeasr.runtimes.errors import UserError

    _, graph = la_graph
    with pytest.raises(UserError, match=r"fixed chunk of 160 ms \(16 fbank frames, plus a 80 ms look-ahead\)"):
        StreamingSession(get_backend("ort", graph, threads=1), chunk_frames=24)


# --- training form -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mixer", BIDIRECTIONAL)
@pytest.mark.parametrize("chunk,lookahead", [(1, 2), (3, 2), (8, 5), (40, 8)])
def test_training_windows_equal_a_loop_over_windows(mixer, chunk, lookahead):
    from edgeasr.models.mixers.bidirectional import r2l_within_chunks

    m = small_encoder(mixer).layers[0].mixer
    x = torch.randn(3, 29, 32)
    lens = torch.tensor([29, 17, 4])
    with torch.no_grad():
        got = r2l_within_chunks(m.r2l, x, lens, chunk, lookahead)
        for s in range(0, 29, chunk):
            window = torch.clamp(lens - s, 0, chunk + lookahead)  # the chunk and what follows it, within each utterance
            ref = m(x[:, s:s + chunk + lookahead], window, "r2l")
            for b in range(3):
                n = min(int(window[b]), chunk)
                if n > 0:
                    assert (got[b, s:s + n] - ref[b, :n]).abs().max().item() <= 1e-5


def test_training_draws_lookaheads_and_reaches_both_directions():
    from edgeasr.models.config import EncoderConfig
    from edgeasr.models.conformer import Encoder

    torch.manual_seed(0)
    cfg = EncoderConfig(mixer="rwkv", d_model=32, n_layers=2, conv_kernel=5, dirdrop="both", dirdrop_p=0.2,
                        chunk_bi_p=1.0, chunk_bi_ms=[80, 160], chunk_bi_lookahead_ms=[0, 80])
    model = Encoder(cfg).train()
    seen = {model._plan()[2] for _ in range(30)}
    assert seen == {0, 2}
    lp, _, _ = model(feats(2, 40, 0), torch.tensor([40, 23]))
    lp.sum().backward()
    assert model.layers[0].mixer.r2l.output.weight.grad is not None
    with pytest.raises(ValueError, match="chunk_bi_lookahead_ms"):
        EncoderConfig(mixer="rwkv", chunk_bi_lookahead_ms=[-40])
