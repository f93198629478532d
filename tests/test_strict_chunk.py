"""Strict-chunk streaming (seed 001, issue 34): the encoder run on every chunk alone. The batched torch form equals a
loop that encodes each chunk as its own utterance (and so the full ONNX graph fed one chunk at a time); training
draws its chunk sizes; dev WER and the model card are measured in strict chunks; the CLI sets the model up."""
import json
import random

import pytest
import torch
from click.testing import CliRunner

from edgeasr.cli import main
from edgeasr.models.checkpoint import load_checkpoint
from edgeasr.models.config import EncoderConfig
from edgeasr.models.conformer import split_chunks, strict_chunk_frames
from test_encoder import small_encoder

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def feats(T: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, T, 80, generator=g) * 3 + 10


@pytest.mark.parametrize("mixer", ["mha", "none", "deformable", "rwkv"])
@pytest.mark.parametrize("chunk", [4, 16, 64])
def test_batched_strict_chunks_equal_each_chunk_encoded_alone(mixer, chunk):
    model = small_encoder(mixer, causal=False)
    model.set_direction("bi")
    lengths = [37, 64, 5]
    xs = [feats(t, i) for i, t in enumerate(lengths)]
    x = torch.zeros(len(xs), max(lengths), 80)
    for b, xb in enumerate(xs):
        x[b, : xb.shape[1]] = xb[0]
    model.strict_chunk_frames = chunk
    with torch.no_grad():
        lp, out_lens, h = model(x, torch.tensor(lengths))
        model.strict_chunk_frames = None
        for b, T in enumerate(lengths):
            assert int(out_lens[b]) == -(-T // 4)
            want = torch.cat([model(xs[b][:, s:s + chunk], torch.tensor([min(chunk, T - s)]))[2]
                              for s in range(0, T, chunk)], dim=1)
            got = h[b: b + 1, : int(out_lens[b])]
            assert got.shape == want.shape
            # 1e-5 relative to O(1) outputs; batched and single-chunk kernels sum in different orders
            assert (got - want).abs().max().item() <= 5e-5, (mixer, chunk, T)


def test_split_chunks_lengths_and_padding():
    x = torch.arange(2 * 10, dtype=torch.float32).reshape(2, 10, 1)
    chunks, lens = split_chunks(x, torch.tensor([10, 3]), 4)
    assert chunks.shape == (6, 4, 1)
    assert lens.tolist() == [4, 4, 2, 3, 4, 4]  # chunks past an utterance's end keep a full (ignored) length
    assert chunks[2, :2, 0].tolist() == [8, 9] and chunks[2, 2:, 0].tolist() == [0, 0]


def test_chunk_sizes_in_frames_and_config_checks():
    assert [strict_chunk_frames(ms) for ms in (160, 320, 640, 1280, 10)] == [16, 32, 64, 128, 4]
    with pytest.raises(ValueError, match="strict_chunk_ms"):
        EncoderConfig(strict_chunk_ms=[0])
    assert EncoderConfig.from_dict({"mixer": "mha"}).strict_chunk_ms == []  # old configs load unchanged


def test_training_draws_every_size_and_inference_uses_the_set_one():
    model = small_encoder("none", causal=False, strict_chunk_ms=[160, 640])
    model._rng = random.Random(1)
    model.train()
    assert {model._strict_chunk() for _ in range(40)} == {16, 64}
    model.eval()
    assert model._strict_chunk() is None
    model.strict_chunk_frames = 32
    assert model._strict_chunk() == 32


def test_train_cli_strict_chunks_end_to_end(corpus, tmp_path):
    run_dir = tmp_path / "run"
    res = CliRunner().invoke(main, [
        "train", "--mixer", "mha", "--train", str(corpus / "train.jsonl"), "--dev", str(corpus / "dev.jsonl"),
        "--out", str(run_dir), "--max-steps", "2", "--strict-chunk-ms", "160,640", "--d-model", "32",
        "--layers", "2", "--batch-frames", "4000", "--threads", "1"])
    assert res.exit_code == 0, res.output
    model = json.loads((run_dir / "config.json").read_text())["model"]
    assert model["strict_chunk_ms"] == [160, 640]
    assert model["direction"] == "bi" and model["causal"] is False  # a strict chunk is seen whole
    net, config = load_checkpoint(run_dir)
    assert net.strict_chunk_frames is None  # inference picks its chunk; the checkpoint does not fix one

    res = CliRunner().invoke(main, ["train", "--mixer", "mha", "--train", str(corpus / "train.jsonl"),
                                    "--dev", str(corpus / "dev.jsonl"), "--out", str(tmp_path / "bad"),
                                    "--strict-chunk-ms", "160,x"])
    assert res.exit_code != 0 and "milliseconds" in res.output


@pytest.fixture(scope="module")
def strict_runs(corpus, tmp_path_factory):
    """Two tiny strict-chunk models (mha, none), 2 steps each: real checkpoints for the chunk sweep."""
    root = tmp_path_factory.mktemp("strict")
    for mixer in ("mha", "none"):
        res = CliRunner().invoke(main, [
            "train", "--mixer", mixer, "--train", str(corpus / "train.jsonl"), "--dev", str(corpus / "dev.jsonl"),
            "--out", str(root / mixer), "--max-steps", "2", "--strict-chunk-ms", "160,640", "--d-model", "32",
            "--layers", "2", "--batch-frames", "4000", "--threads", "1"])
        assert res.exit_code == 0, res.output
    return root


def test_experiment_chunk_sweep_writes_the_table_with_intervals(strict_runs, corpus, tmp_path):
    out = tmp_path / "sweep"
    res = CliRunner().invoke(main, ["experiment", "chunk-sweep", "--model", str(strict_runs / "mha"),
                                    "--model", str(strict_runs / "none"), "--test", str(corpus / "dev.jsonl"),
                                    "--chunks-ms", "160,640", "--max-utterances", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "chunk_sweep.json").read_text())
    assert [m["trained"] for m in report["models"]] == ["strict chunks 160,640 ms"] * 2
    rows = report["rows"]
    assert [(r["mixer"], r["chunk_ms"], r["mode"]) for r in rows] == [
        ("mha", 160, "chunk"), ("mha", 640, "chunk"), ("none", 160, "chunk"), ("none", 640, "chunk")]
    for r in rows:
        assert r["status"] == "ok" and r["ci95"][0] <= r["wer"] <= r["ci95"][1] and r["rtf_median"] > 0
    assert all(r["delta_vs"] == str(strict_runs / "mha") and "significant" in r for r in rows[2:])
    assert "| ΔWER (95 % CI) |" in (out / "chunk_sweep.md").read_text()
    assert (out / "chunk_sweep.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, needle", [
    (["--chunks-ms", "0"], "--chunks-ms"),
    (["--chunks-ms", "16x"], "milliseconds"),
    (["--model", "no-such-model"], "no-such-model"),
])
def test_chunk_sweep_bad_input_is_one_line_and_writes_nothing(corpus, tmp_path, args, needle):
    out = tmp_path / "sweep"
    res = CliRunner().invoke(main, ["experiment", "chunk-sweep", "--test", str(corpus / "dev.jsonl"),
                                    "--out", str(out), *args])
    assert res.exit_code != 0 and needle in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_chunk_sweep_empty_manifest_is_one_line(strict_runs, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = CliRunner().invoke(main, ["experiment", "chunk-sweep", "--model", str(strict_runs / "none"),
                                    "--test", str(empty), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "empty" in res.output and "Traceback" not in res.output


def test_eval_decodes_a_strict_model_at_its_training_sizes(strict_runs, corpus):
    res = CliRunner().invoke(main, ["eval", str(strict_runs / "mha"), "--test", str(corpus / "dev.jsonl"), "--json"])
    assert res.exit_code == 0, res.output
    assert [r["direction"] for r in json.loads(res.output)] == ["strict:160ms", "strict:640ms"]
    res = CliRunner().invoke(main, ["eval", str(strict_runs / "mha"), "--test", str(corpus / "dev.jsonl"), "--json",
                                    "--direction", "strict:320ms,bi"])
    assert res.exit_code == 0, res.output
    assert [r["direction"] for r in json.loads(res.output)] == ["strict:320ms", "bi"]


@pytest.mark.parametrize("mode", ["strict:30ms", "strict", "strict:-40ms"])
def test_eval_bad_strict_chunk_is_one_line(strict_runs, corpus, mode):
    res = CliRunner().invoke(main, ["eval", str(strict_runs / "mha"), "--test", str(corpus / "dev.jsonl"),
                                    "--direction", mode])
    assert res.exit_code != 0 and "strict" in res.output and "Traceback" not in res.output
