"""The shipped flagship end to end: its card is honest (WER re-measured), and its int8 QDQ step graph transcribes
held-out TTS voices within the ΔWER budget on ONNX Runtime and OpenVINO (issue 5)."""
import json

import pytest

from edgeasr import pretrained

pytestmark = pytest.mark.skipif(pretrained.resolve_model_dir("default") is None,
                                reason="no shipped default model in toolchain/pretrained")
INT8_WER_BUDGET = 0.03  # absolute, over the held-out test set below (58 utterances, 641 words)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """Held-out voices only: the dev and test splits of a 1 h corpus (seed 11), without its train hours. A budget of
    3 points needs hundreds of words: on the 6 utterances (67 words) this check once used, 2 words were 3 points."""
    from edgeasr.data.corpus import synthesize_corpus
    from edgeasr.data.manifest import read_manifest

    out = tmp_path_factory.mktemp("heldout")
    synthesize_corpus(out, hours=1.0, seed=11, jobs=2, progress=False, splits=("dev", "test"))
    calib, test = read_manifest(out / "dev.jsonl"), read_manifest(out / "test.jsonl")
    assert len(test) >= 50 and sum(len(e.text.split()) for e in test) >= 500
    return calib, test


def test_pretrained_lists_default_with_card(tmp_path):
    from click.testing import CliRunner

    from edgeasr.cli import main

    r = CliRunner().invoke(main, ["pretrained", "--json"])
    assert r.exit_code == 0
    rows = json.loads(r.output)
    flagship = next(x for x in rows if x["default"])
    assert flagship["mixer"] == "rwkv" and 3e6 <= flagship["parameters"] <= 5e6
    assert flagship["size_mb"] <= 10 and "edgeasr train" in flagship["command"]
    assert {"l2r", "alt", "bi"} <= set(flagship["wer"]["test"])


def test_pretrained_table_never_cuts_names_in_a_narrow_terminal(monkeypatch):
    from click.testing import CliRunner

    from edgeasr.cli import main

    monkeypatch.setenv("COLUMNS", "80")  # rich's width for pipes and small terminals
    r = CliRunner().invoke(main, ["pretrained"])
    assert r.exit_code == 0
    cells = {c.strip() for line in r.output.splitlines() for c in line.split("│")}
    assert set(pretrained.shipped()) <= cells, r.output
    assert "(default)" in cells


STREAMING_MODEL = pretrained.STREAMING  # the shipped model `transcribe default --stream` runs, in chunk-bi


@pytest.mark.parametrize("name,direction,chunk,lookahead", [("default", "l2r", 32, 0),
                                                            (STREAMING_MODEL, "chunk-bi", 32, 32)])
def test_int8_within_wer_budget_on_ort_and_openvino(heldout, tmp_path, name, direction, chunk, lookahead):
    from edgeasr.calibration.int8 import quantize_model
    from edgeasr.exporters.onnx_export import export
    from edgeasr.runtimes.audio import load_audio
    from edgeasr.runtimes.backends import get_backend
    from edgeasr.runtimes.session import OfflineSession, StreamingSession
    from edgeasr.pretrained import load_model
    from edgeasr.evaluation.metrics import wer

    calib, test = heldout
    encoder, config = load_model(name)
    fp32 = tmp_path / "step.onnx"  # the streaming sibling as `transcribe default --stream` runs it: 320 ms + 320 ms
    export(encoder, config, fp32, "step", direction, chunk, verify=False, lookahead_frames=lookahead)
    int8 = tmp_path / "step.int8.onnx"
    quantize_model(fp32, [e.audio_filepath for e in calib], int8)
    refs = [e.text for e in test]
    audio = [load_audio(e.audio_filepath)[0] for e in test]

    def run(path, backend):
        session = OfflineSession(get_backend(backend, path))
        return [session.transcribe(a) for a in audio]

    base = wer(refs, run(fp32, "ort"))
    for backend in ("ort", "openvino"):
        got = wer(refs, run(int8, backend))
        print(f"{name} {direction} {backend}: WER fp32 {base:.3f} -> int8 {got:.3f}")
        assert abs(got - base) <= INT8_WER_BUDGET, backend
    # OpenVINO streams the shipped int8 step graph stateful, as fp32 (issue 32)
    assert StreamingSession(get_backend("openvino", int8), chunk).backend.mode == "stateful, static shapes"
    # the CPU-only dynamic format (edgeasr quantize --format dynamic) within the same budget on ORT
    dyn = tmp_path / "step.dyn.int8.onnx"
    quantize_model(fp32, [e.audio_filepath for e in calib], dyn, fmt="dynamic")
    got = wer(refs, run(dyn, "ort"))
    print(f"{name} {direction} ort dynamic: WER fp32 {base:.3f} -> int8 {got:.3f}")
    assert abs(got - base) <= INT8_WER_BUDGET


@pytest.mark.parametrize("name", sorted(pretrained.shipped()))
def test_every_shipped_model_has_an_honest_card(name, tmp_path):
    """Size and size class, the training command, and the card's WER on the real recordings re-measured on exactly
    the shipped (fp16) weights."""
    from edgeasr.cli.data import POCKETSPHINX_DATA, collect_real
    from edgeasr.pretrained import load_model
    from edgeasr.training.ship import wer_table

    path = pretrained.shipped()[name]
    card = pretrained.card(path)
    assert card["size_mb"] <= 10 and (path / "model.safetensors").stat().st_size <= 10e6
    assert 2e6 <= card["parameters"] <= 5e6  # one size class: d_model 144, 6 layers
    assert card["command"].startswith("edgeasr train") and card["steps"] > 0
    assert 0 < card["weights_step"] <= card["steps"]  # the shipped weights are one checkpoint of that run
    model, config = load_model(name)
    from edgeasr.training.ship import STREAMING_CHUNKS_MS, STREAMING_LOOKAHEAD_MS

    trained_modes = {"l2r", "alt", "bi"} if model.bidirectional else {config["model"]["direction"]}
    if model.bidirectional and config["model"].get("chunk_bi_p"):
        trained_modes |= {f"chunk-bi:{c}ms" for c in STREAMING_CHUNKS_MS}
        trained_modes |= {f"chunk-bi:{c}ms+{c}ms" for c in STREAMING_LOOKAHEAD_MS}
    if config["model"].get("strict_chunk_ms"):  # trained for strict chunks: measured at each of its sizes only
        trained_modes = {f"strict:{c:g}ms" for c in config["model"]["strict_chunk_ms"]}
    assert set(card["wer"]["test"]) == trained_modes
    if "real" not in card["wer"] or not POCKETSPHINX_DATA.is_dir():
        pytest.skip("no real-recording WER on the card or pocketsphinx-testdata not installed")
    collect_real(POCKETSPHINX_DATA, tmp_path)
    again = wer_table(model, config, {"real": tmp_path / "real.jsonl"})["real"]
    for mode, recorded in card["wer"]["real"].items():
        assert again[mode] == pytest.approx(recorded, abs=0.01), mode


def test_fine_tune_card_names_the_weights_it_started_from():
    """``--init default`` must not reach the card as "default": shipping the fine-tune under the flagship's name
    replaces what "default" meant, so the card names the starting weights by hash and their own card."""
    import hashlib

    from edgeasr.models.checkpoint import WEIGHTS
    from edgeasr.training.provenance import describe_init

    flagship = pretrained.shipped()[pretrained.DEFAULT]
    sha = hashlib.sha256((flagship / WEIGHTS).read_bytes()).hexdigest()[:12]
    text = describe_init("default")
    assert text.startswith(f"{pretrained.DEFAULT} as shipped before") and sha in text
    assert str(pretrained.card(flagship)["wer"]["test"]["bi"]) in text
    assert describe_init("work/runs/some-run") == "work/runs/some-run" and describe_init("") is None


def test_fine_tune_card_describes_an_unshipped_run_it_started_from(tmp_path):
    """A run directory that was never shipped is named with its steps and hardware and, in turn, its own start."""
    from edgeasr.training.provenance import describe_init

    run = tmp_path / "r4ft"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"steps": 436, "hardware": "CPU", "best_dev_wer": 0.27}))
    (run / "config.json").write_text(json.dumps({"train": {"init": "default"}}))
    text = describe_init(str(run))
    assert text.startswith(f"{run} (436 steps on CPU, dev WER 27.00 %; itself fine-tuned from ")
    # r4ft started from whatever "default" was then, which may since have been replaced: not the current card
    assert describe_init("default") not in text and "which version was not recorded" in text
    recorded = "rwkv-dirdrop-both as shipped before (model.safetensors sha256 e2dcf1a525c0…, 499 steps)"
    (run / "config.json").write_text(json.dumps({"train": {"init": "default"}, "init_from": recorded}))
    assert describe_init(str(run)) == f"{run} (436 steps on CPU, dev WER 27.00 %; itself fine-tuned from {recorded})"


def test_streaming_default_runs_its_chunk_bi_sibling(tmp_path):
    """`transcribe default --stream` streams the sibling fine-tuned for chunk-bi, 320 ms chunks with a 320 ms
    look-ahead, and says so."""
    import shutil
    import subprocess
    import sys

    assert pretrained.streaming_choice("default") == (pretrained.STREAMING, pretrained.STREAMING_MODE)
    assert pretrained.streaming_choice(pretrained.STREAMING) == (pretrained.STREAMING, pretrained.STREAMING_MODE)
    assert pretrained.streaming_choice("mha") == ("mha", None)
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    wav = tmp_path / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "in the beginning god created the heaven and the earth"], check=True)
    p = subprocess.run([sys.executable, "-m", "edgeasr.cli", "transcribe", "default", str(wav), "--stream", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout)
    assert f"as {pretrained.STREAMING} in chunk-bi:320ms+320ms mode" in p.stderr
    assert row["chunk_frames"] == 32 and row["lookahead_frames"] == 32
    assert "created the heaven" in row["text"]
