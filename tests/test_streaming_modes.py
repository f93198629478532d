"""chunk-bi end to end on the device path and in the reports: Recognizer streams on ORT and OpenVINO equal the torch
reference, a chunk-bi graph refuses any other chunking in one line, eval/parity accept chunk-bi, and the streaming
table of `edgeasr experiment streaming`."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import edgeasr
from edgeasr.cli import main
from edgeasr.exporters.onnx_export import export
from edgeasr.models.checkpoint import load_checkpoint
from edgeasr.runtimes.audio import load_audio
from edgeasr.runtimes.features import FbankOptions, compute_fbank
from edgeasr.runtimes.vocab import BLANK_ID, VOCAB, ctc_greedy
from test_export import save_tiny

ROOT = Path(__file__).resolve().parents[1]
CF = 32  # fbank frames per chunk: 320 ms


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed (make system-deps)")
    root = tmp_path_factory.mktemp("cb")
    run = save_tiny(root / "ck", "rwkv")
    model, config = load_checkpoint(run)
    with torch.no_grad():  # real fbank statistics: real speech gives varied, non-blank outputs
        model.feat_mean.fill_(-8.0)
        model.feat_std.fill_(4.0)
    from edgeasr.models.checkpoint import save_checkpoint

    save_checkpoint(run, model, {k: config[k] for k in ("features", "vocab", "blank_id")})
    step = export(model, config, root / "cb.step.onnx", "step", "chunk-bi", CF, verify=False).path
    wav = root / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "the children of israel went up out of egypt"], check=True)
    samples, _ = load_audio(wav)
    model.set_direction("chunk-bi", CF)
    feats = torch.from_numpy(compute_fbank(samples, FbankOptions.from_dict(config["features"])))[None]
    with torch.no_grad():
        lp = model(feats, torch.tensor([feats.shape[1]]))[0][0].numpy()
    return {"root": root, "run": run, "step": step, "wav": wav, "samples": samples,
            "ref": ctc_greedy(lp, BLANK_ID, VOCAB)}


@pytest.mark.parametrize("backend", ["ort", "openvino"])
def test_recognizer_streams_chunk_bi_like_torch(setup, backend):
    with edgeasr.Recognizer(str(setup["step"]), backend=backend) as rec:
        assert rec.chunk_frames == CF
        s = rec.create_stream()
        x = setup["samples"]
        partials = [p for i in range(0, len(x), 777) if (p := s.accept_waveform(16000, x[i:i + 777]))]
        result = s.finish()
    assert setup["ref"] and result.text == setup["ref"]
    assert len(partials) >= 2


def test_chunk_bi_graph_refuses_another_chunk_in_one_line(setup):
    with pytest.raises(edgeasr.UserError, match="fixed chunk of 320 ms"):
        edgeasr.Recognizer(str(setup["step"]), chunk_ms=160)
    p = subprocess.run([sys.executable, "-m", "edgeasr.cli", "transcribe", str(setup["step"]), str(setup["wav"]),
                        "--stream", "--chunk-ms", "640"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "320 ms" in p.stderr, p.stderr
    p = subprocess.run([sys.executable, "-m", "edgeasr.cli", "transcribe", str(setup["step"]), str(setup["wav"]),
                        "--stream", "--chunk-ms", "320", "--json"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0 and json.loads(p.stdout)["text"] == setup["ref"], p.stderr


def test_eval_checkpoint_and_export_agree_in_chunk_bi(setup, corpus):
    test = corpus / "test.jsonl"
    rows = {}
    for model, extra in ((setup["run"], ["--direction", "l2r,chunk-bi:320ms"]), (setup["step"], [])):
        res = CliRunner().invoke(main, ["eval", str(model), "--test", str(test), "--json", *extra])
        assert res.exit_code == 0, res.output
        rows[str(model)] = json.loads(res.output)
    ck = {r["direction"]: r["wer"] for r in rows[str(setup["run"])]}
    assert set(ck) == {"l2r", "chunk-bi:320ms"}
    assert [r["direction"] for r in rows[str(setup["step"])]] == ["chunk-bi:320ms"]
    assert rows[str(setup["step"])][0]["wer"] == ck["chunk-bi:320ms"]
    res = CliRunner().invoke(main, ["eval", str(setup["step"]), "--test", str(test), "--direction", "l2r"])
    assert res.exit_code == 2 and "exported in chunk-bi:320ms mode" in res.output


def parity_cells(step, run, test, out) -> tuple[list[dict], list[dict]]:
    """``edgeasr parity`` of ``step`` against the checkpoint ``run`` on ORT and OpenVINO (2 utterances): the reference
    cells and the fp32 candidate cells that ran."""
    res = CliRunner().invoke(main, ["parity", "--model", str(step), "--test", str(test), "--reference", str(run),
                                    "--backends", "ort,openvino", "--no-peer", "--max-utterances", "2", "--in-process",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    cells = json.loads((out / "report.json").read_text())["cells"]
    ref = [c for c in cells if c.get("role") == "reference"]
    ran = [c for c in cells if c.get("role") == "candidate" and c.get("status", "ok") == "ok"
           and c["precision"] == "fp32"]
    return ref, ran


def test_parity_reference_runs_chunk_bi(setup, corpus, tmp_path):
    ref, ran = parity_cells(setup["step"], setup["run"], corpus / "test.jsonl", tmp_path / "p")
    assert ref and all(c["direction"] == "chunk-bi" for c in ref)
    assert ran and all(c["metrics"]["err_max_abs"] < 1e-4 and c["metrics"]["wer_delta"] == 0 for c in ran), ran


def test_lookahead_graph_in_eval_and_parity(setup, corpus, tmp_path):
    """A look-ahead step graph: eval of the checkpoint in its mode equals eval of the file, and parity's torch
    reference streams with the same look-ahead (ORT and OpenVINO agree with it)."""
    model, config = load_checkpoint(setup["run"])
    step = export(model, config, tmp_path / "la.step.onnx", "step", "chunk-bi", CF, verify=False,
                  lookahead_frames=16).path
    test = corpus / "test.jsonl"
    wers = {}
    for m, extra in ((setup["run"], ["--direction", "chunk-bi:320ms+160ms"]), (step, [])):
        res = CliRunner().invoke(main, ["eval", str(m), "--test", str(test), "--json", *extra])
        assert res.exit_code == 0, res.output
        (row,) = json.loads(res.output)
        assert row["direction"] == "chunk-bi:320ms+160ms"
        wers[str(m)] = row["wer"]
    assert wers[str(setup["run"])] == wers[str(step)]
    ref, ran = parity_cells(step, setup["run"], test, tmp_path / "p")
    assert ref and all(c["direction"] == "chunk-bi:320ms+160ms" for c in ref)
    assert len(ran) == 2 and all(c["metrics"]["err_max_abs"] < 1e-4 and c["metrics"]["wer_delta"] == 0
                                 for c in ran), ran


def test_streaming_table(setup, corpus, tmp_path):
    res = CliRunner().invoke(main, ["experiment", "streaming", "--model", str(setup["run"]), "--test",
                                    str(corpus / "test.jsonl"), "--chunks-ms", "320,480+160", "--max-utterances", "2",
                                    "--timing-utterances", "1", "--threads", "1", "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "e" / "streaming.json").read_text())
    assert [r["mode"] for r in report["rows"]] == ["l2r", "chunk-bi:320ms", "chunk-bi:480ms+160ms", "alt", "bi"]
    for r in report["rows"]:
        assert 0 <= r["wer"]["test"]["greedy"]
        assert ("rtf" in r) == (r["mode"] not in ("alt", "bi"))
    assert report["rows"][2]["lookahead_ms"] == 160 and report["rows"][2]["chunk_ms"] == 480
    assert "| chunk-bi:480ms+160ms |" in (tmp_path / "e" / "streaming.md").read_text()
    res = CliRunner().invoke(main, ["experiment", "streaming", "--model", str(setup["run"]), "--test",
                                    str(corpus / "test.jsonl"), "--chunks-ms", "100", "--out", str(tmp_path / "f")])
    assert res.exit_code == 2 and "multiples of 40" in res.output and not (tmp_path / "f").exists()
    res = CliRunner().invoke(main, ["experiment", "streaming", "--model", str(setup["run"]), "--test",
                                    str(corpus / "test.jsonl"), "--chunks-ms", "320+30", "--out", str(tmp_path / "f")])
    assert res.exit_code == 2 and "multiples of 40" in res.output and "Traceback" not in res.output
