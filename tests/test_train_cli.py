"""End to end on real TTS audio: synthesize a tiny corpus, train through the CLI (single process and 2-process
DDP with gloo), resume, evaluate and transcribe; user mistakes give one line and exit != 0."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EDGEASR = [sys.executable, "-m", "edgeasr.cli"]
TINY = ["--d-model", "32", "--layers", "2", "--batch-frames", "4000", "--threads", "1"]


def run(args, cwd=ROOT, env_extra=None, check=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def test_train_resume_eval_transcribe(corpus, tmp_path):
    run_dir = tmp_path / "run"
    p = run(EDGEASR + ["train", "--mixer", "rwkv", "--train", str(corpus / "train.jsonl"), "--dev",
                       str(corpus / "dev.jsonl"), "--out", str(run_dir), "--epochs", "1", "--dirdrop", "both",
                       "--dirdrop-p", "0.5", *TINY])
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["steps"] >= 1 and summary["epochs"] == 1
    for name in ("model.safetensors", "last.safetensors", "config.json", "train_state.safetensors"):
        assert (run_dir / name).is_file()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["dirdrop"] == "both" and config["features"]["num_bins"] == 80
    assert "edgeasr train" in config["command"]
    assert not list(run_dir.glob("*.tmp"))

    # resume continues counting from the saved step for one more epoch
    state = json.loads((run_dir / "train_state.json").read_text())
    p = run(EDGEASR + ["train", "--train", str(corpus / "train.jsonl"), "--dev", str(corpus / "dev.jsonl"),
                       "--out", str(run_dir), "--resume", "--epochs", "2"])
    assert "resumed from step" in p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["steps"] > state["step"]

    p = run(EDGEASR + ["eval", str(run_dir), "--test", str(corpus / "test.jsonl"), "--json"])
    rows = json.loads(p.stdout)
    assert {r["direction"] for r in rows} == {"l2r", "alt", "bi"} and all(r["wer"] >= 0 for r in rows)

    wav = next((corpus / "wavs" / "test").glob("*.wav"))
    p = run(EDGEASR + ["transcribe", str(run_dir), str(wav), "--json", "--direction", "l2r"])
    out = json.loads(p.stdout.strip().splitlines()[0])
    assert out["audio"] == str(wav) and isinstance(out["text"], str) and out["duration"] > 0.5


def test_max_steps_ends_the_run_and_its_schedule(corpus, tmp_path):
    run_dir = tmp_path / "run"
    p = run(EDGEASR + ["train", "--mixer", "none", "--train", str(corpus / "train.jsonl"), "--dev",
                       str(corpus / "dev.jsonl"), "--out", str(run_dir), "--epochs", "50", "--max-steps", "3",
                       *TINY])
    assert json.loads(p.stdout.strip().splitlines()[-1])["steps"] == 3
    assert json.loads((run_dir / "config.json").read_text())["train"]["max_steps"] == 3


def test_resume_with_a_larger_step_budget_continues_a_finished_run(corpus, tmp_path):
    run_dir = tmp_path / "run"
    common = ["--train", str(corpus / "train.jsonl"), "--dev", str(corpus / "dev.jsonl"), "--out", str(run_dir)]
    run(EDGEASR + ["train", "--mixer", "none", *common, "--epochs", "50", "--max-steps", "2", *TINY])
    p = run(EDGEASR + ["train", *common, "--resume", "--max-steps", "4"])
    assert "resumed from step 2" in p.stderr + p.stdout
    assert json.loads(p.stdout.strip().splitlines()[-1])["steps"] == 4
    last = json.loads((run_dir / "last.json").read_text())
    assert last["train"]["max_steps"] == 4 and last["metrics"]["step"] == 4
    # the command recorded with the weights must reproduce them: the first run, then the resume
    assert last["command"].count("edgeasr train") == 2 and "--resume" in last["command"]


def test_config_json_describes_the_best_weights_not_the_last(corpus, tmp_path, monkeypatch):
    """Dev WER 0.9, 0.5, 0.7, 0.8 at steps 1-4: model.safetensors and config.json are step 2's, last.* step 4's."""
    import edgeasr.training.train as tr
    from edgeasr.models.config import EncoderConfig

    wers = iter([0.9, 0.5, 0.7, 0.8, 0.8])  # the last value: the end-of-run eval, if it runs again
    monkeypatch.setattr(tr, "evaluate", lambda *a, **k: (next(wers), []))
    run_dir = tmp_path / "run"
    tc = tr.TrainConfig(epochs=50, max_steps=4, eval_every=1, batch_frames=4000, threads=1)
    tr.train(run_dir, EncoderConfig(mixer="none", d_model=32, n_layers=2), tc, corpus / "train.jsonl",
             corpus / "dev.jsonl", command="edgeasr train test")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["metrics"]["step"] == 2 and config["metrics"]["dev_wer"] == 0.5
    assert json.loads((run_dir / "last.json").read_text())["metrics"]["step"] == 4
    from safetensors.torch import load_file

    assert any((load_file(run_dir / "model.safetensors")[k] != v).any()
               for k, v in load_file(run_dir / "last.safetensors").items())


def test_ddp_two_cpu_processes(corpus, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun is installed with torch"
    run_dir = tmp_path / "ddp"
    p = run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "edgeasr.cli", "train", "--mixer", "rwkv",
             "--dirdrop", "both", "--dirdrop-p", "0.5", "--train", str(corpus / "train.jsonl"), "--dev",
             str(corpus / "dev.jsonl"), "--out", str(run_dir), "--epochs", "1", *TINY])
    assert "world 2" in p.stderr
    assert (run_dir / "model.safetensors").is_file()


@pytest.mark.parametrize("args, needle", [
    (["train", "--mixer", "rwkv", "--train", "/nonexistent.jsonl", "--dev", "/nonexistent.jsonl", "--out", "x"],
     "manifest not found"),
    (["transcribe", "/no/such/run", "a.wav"], "not a checkpoint directory"),
    (["eval", "/no/such/run", "--test", "t.jsonl"], "not a checkpoint directory"),
])
def test_user_errors_are_one_line(args, needle, tmp_path):
    p = run(EDGEASR + args, cwd=tmp_path, check=False)
    assert p.returncode != 0
    assert needle in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_transcribe_corrupt_audio_is_one_line(corpus, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    p = run(EDGEASR + ["transcribe", "default", str(bad)], check=False)
    assert p.returncode != 0 and "bad.wav" in p.stderr and "Traceback" not in p.stderr


def test_bad_manifest_row_is_named_by_train(corpus, tmp_path):
    wav = str(next((corpus / "wavs" / "train").glob("*.wav")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in [
        {"audio_filepath": wav, "text": "in the beginning", "duration": 1.0},
        {"audio_filepath": "missing.wav", "text": "hi", "duration": 1.0},
        {"audio_filepath": wav, "text": "!!!", "duration": 1.0}]))
    p = run(EDGEASR + ["train", "--mixer", "none", "--train", str(bad), "--dev", str(bad), "--out",
                       str(tmp_path / "r")], check=False)
    assert p.returncode != 0 and "row 2" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_several_train_manifests_are_pooled_each_with_its_own_relative_paths(corpus, tmp_path):
    """--train twice: a second corpus in another folder, its audio paths relative to its own manifest."""
    rows = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    extra = tmp_path / "extra"
    (extra / "audio").mkdir(parents=True)
    for i, r in enumerate(rows[:3]):
        shutil.copy(corpus / r["audio_filepath"], extra / "audio" / f"{i}.wav")
    (extra / "mine.jsonl").write_text("".join(json.dumps({**r, "audio_filepath": f"audio/{i}.wav"}) + "\n"
                                              for i, r in enumerate(rows[:3])))
    run_dir = tmp_path / "run"
    p = run(EDGEASR + ["train", "--mixer", "none", "--train", str(corpus / "train.jsonl"), "--train",
                       str(extra / "mine.jsonl"), "--dev", str(corpus / "dev.jsonl"), "--out", str(run_dir),
                       "--max-steps", "1", *TINY])
    assert f"train: {len(rows) + 3} utterances" in p.stderr and "from 2 manifests" in p.stderr
    data = json.loads((run_dir / "config.json").read_text())["data"]
    assert data["train"] == [str(corpus / "train.jsonl"), str(extra / "mine.jsonl")]
    assert [s["utterances"] for s in data["train_sets"]] == [len(rows), 3]
    assert data["train_hours"] == pytest.approx(sum(s["hours"] for s in data["train_sets"]), abs=0.01)

    # the same manifest twice is a mistake (it would silently double that corpus), named in one line
    p = run(EDGEASR + ["train", "--mixer", "none", "--train", str(corpus / "train.jsonl"), "--train",
                       str(corpus / "train.jsonl"), "--dev", str(corpus / "dev.jsonl"), "--out",
                       str(tmp_path / "r2")], check=False)
    assert p.returncode != 0 and "given twice" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    # a bad row in the second manifest is named with that manifest and its own row number
    (extra / "bad.jsonl").write_text(json.dumps({**rows[0], "audio_filepath": "audio/0.wav"}) + "\n"
                                     + json.dumps({**rows[1], "audio_filepath": "audio/missing.wav"}) + "\n")
    p = run(EDGEASR + ["train", "--mixer", "none", "--train", str(corpus / "train.jsonl"), "--train",
                       str(extra / "bad.jsonl"), "--dev", str(corpus / "dev.jsonl"), "--out",
                       str(tmp_path / "r3")], check=False)
    assert p.returncode != 0 and "bad.jsonl row 2" in p.stderr and "Traceback" not in p.stderr


def test_weight_ema_is_scored_saved_as_the_model_and_resumed(corpus, tmp_path, monkeypatch):
    """With ``ema_decay`` dev WER scores the averaged copy, model.safetensors holds it (the best, as WER falls
    here), last.safetensors the raw weights, and a resume continues the average where it stopped."""
    import dataclasses

    from safetensors.torch import load_file

    import edgeasr.training.train as tr
    from edgeasr.models.config import EncoderConfig

    scored = []

    def fake_evaluate(model, *a, **k):
        scored.append(all(not p.requires_grad for p in model.parameters()))
        return 1.0 / len(scored), []

    monkeypatch.setattr(tr, "evaluate", fake_evaluate)
    run_dir = tmp_path / "run"
    tc = tr.TrainConfig(epochs=50, max_steps=3, eval_every=1, batch_frames=4000, threads=1, ema_decay=0.9)
    cfg = EncoderConfig(mixer="none", d_model=32, n_layers=2)
    tr.train(run_dir, cfg, tc, corpus / "train.jsonl", corpus / "dev.jsonl", command="edgeasr train test")
    assert scored and all(scored)  # the frozen EMA copy, never the model being trained
    assert json.loads((run_dir / "train_state.json").read_text())["ema_updates"] == 3
    ema, model, last = (load_file(run_dir / f) for f in ("ema.safetensors", "model.safetensors", "last.safetensors"))
    assert all((ema[k] == model[k]).all() for k in ema)
    assert any((ema[k] != last[k]).any() for k in ema if k.endswith("weight"))
    assert all((ema[k] == last[k]).all() for k in ("feat_mean", "feat_std"))  # buffers copied, not averaged

    tr.train(run_dir, cfg, dataclasses.replace(tc, max_steps=5), corpus / "train.jsonl", corpus / "dev.jsonl",
             resume=True, command="edgeasr train test")
    assert json.loads((run_dir / "train_state.json").read_text())["ema_updates"] == 5
    (run_dir / "ema.safetensors").unlink()
    with pytest.raises(tr.UserError, match="ema.safetensors: missing"):
        tr.train(run_dir, cfg, dataclasses.replace(tc, max_steps=6), corpus / "train.jsonl",
                 corpus / "dev.jsonl", resume=True)


def test_weight_average_follows_the_ramped_decay():
    import torch

    from edgeasr.training.weight_average import WeightAverage

    net = torch.nn.BatchNorm1d(2)  # one weight, one bias and running-stat buffers
    avg = WeightAverage(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(3.0)
        net.running_mean.fill_(7.0)
    avg.update(net)  # t=0: decay min(0.5, 1/10) = 0.1 -> 0.1 * 1 + 0.9 * 3
    assert torch.allclose(avg.model.weight, torch.full((2,), 2.8))
    assert (avg.model.running_mean == 7.0).all() and not avg.model.weight.requires_grad
    for _ in range(20):
        avg.update(net)
    assert avg.current_decay() == 0.5 and torch.allclose(avg.model.weight, torch.full((2,), 3.0), atol=1e-4)
    with pytest.raises(ValueError, match="within"):
        WeightAverage(net, decay=1.0)


def test_stop_after_minutes_stops_early_and_resume_finishes_the_schedule(corpus, tmp_path):
    run_dir = tmp_path / "run"
    common = ["--train", str(corpus / "train.jsonl"), "--dev", str(corpus / "dev.jsonl"), "--out", str(run_dir)]
    p = run(EDGEASR + ["train", "--mixer", "none", *common, "--epochs", "50", "--max-steps", "6",
                       "--stop-after-minutes", "0.0001", *TINY])
    first = json.loads(p.stdout.strip().splitlines()[-1])
    assert first["stopped"] == "stop-after-minutes" and 1 <= first["steps"] < 6
    p = run(EDGEASR + ["train", *common, "--resume"])
    second = json.loads(p.stdout.strip().splitlines()[-1])
    assert f"resumed from step {first['steps']}" in p.stderr
    assert second["steps"] == 6 and second["stopped"] is None
    assert second["total_train_s"] >= second["wall_s"]  # the card's train time spans every invocation
    assert json.loads((run_dir / "last.json").read_text())["hardware"]


def test_stop_after_minutes_must_not_be_negative_and_its_old_spelling_still_works(corpus, tmp_path):
    p = run(EDGEASR + ["train", "--mixer", "none", "--train", str(corpus / "train.jsonl"), "--dev",
                       str(corpus / "dev.jsonl"), "--out", str(tmp_path / "r"), "--time-limit", "-1"], check=False)
    assert p.returncode == 2 and "--stop-after-minutes must be >= 0" in p.stderr and "Traceback" not in p.stderr
    assert "notice: --time-limit is deprecated; use --stop-after-minutes" in p.stderr


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT"])
def test_interrupted_training_keeps_loadable_checkpoints_and_resumes(corpus, tmp_path, sig):
    """Kill (or Ctrl-C) a run that checkpoints every step at a random moment: both checkpoints still load,
    no temporary files are left where a loader could see them, and --resume continues from the last one."""
    import signal
    import time

    from edgeasr.models.checkpoint import load_checkpoint

    cfg = tmp_path / "cfg.json"
    # a budget no run reaches before the signal (200 one-batch epochs could end inside the 1.5 s wait)
    cfg.write_text(json.dumps({"train": {"eval_every": 1, "dev_limit": 2, "epochs": 100000, "max_steps": 100000}}))
    run_dir = tmp_path / "run"
    common = ["--train", str(corpus / "train.jsonl"), "--dev", str(corpus / "dev.jsonl"), "--out", str(run_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # a shell's background job (`make test &`) inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt: give the child the default disposition a terminal's Ctrl-C meets
    proc = subprocess.Popen(EDGEASR + ["train", "--mixer", "none", "--config", str(cfg), *common, *TINY],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and not (run_dir / "train_state.json").is_file():
        time.sleep(0.2)
    time.sleep(1.5)  # land somewhere inside later checkpoint writes
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    if sig == "SIGINT":
        assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    load_checkpoint(run_dir)
    load_checkpoint(run_dir, "last.safetensors", "last.json")
    step = json.loads((run_dir / "train_state.json").read_text())["step"]
    assert step >= 1
    p = run(EDGEASR + ["train", *common, "--resume", "--max-steps", str(step + 2)])
    assert f"resumed from step {step}" in p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["steps"] == step + 2


def test_eval_breaks_wer_down_by_a_manifest_field(corpus):
    p = run(EDGEASR + ["eval", "default", "--test", str(corpus / "test.jsonl"), "--direction", "bi", "--by", "voice",
                       "--json"])
    rows = json.loads(p.stdout)
    voices = {json.loads(line)["voice"] for line in (corpus / "test.jsonl").read_text().splitlines()}
    assert {r["group"] for r in rows} == voices | {"all"}
    total = next(r for r in rows if r["group"] == "all")
    assert sum(r["utterances"] for r in rows if r["group"] != "all") == total["utterances"]
    assert all(0 <= r["cer"] and 0 <= r["wer"] for r in rows)
    # the table in an 80-column pipe shows every voice name whole (they share long prefixes such as espeak-ng:en-gb)
    p = run(EDGEASR + ["eval", "default", "--test", str(corpus / "test.jsonl"), "--direction", "bi", "--by", "voice"],
            env_extra={"COLUMNS": "80"})
    assert voices <= {c.strip() for line in p.stdout.splitlines() for c in line.split("│")}, p.stdout


def test_eval_by_engine_is_derived_from_the_voice_name(corpus):
    p = run(EDGEASR + ["eval", "default", "--test", str(corpus / "test.jsonl"), "--direction", "bi", "--by", "engine",
                       "--json"])
    rows = json.loads(p.stdout)
    voices = [json.loads(line)["voice"] for line in (corpus / "test.jsonl").read_text().splitlines()]
    engines = {v.split(":")[0] for v in voices}
    assert {r["group"] for r in rows} == engines | {"all"}
    for e in engines:  # each engine's row counts exactly its voices' utterances
        assert next(r for r in rows if r["group"] == e)["utterances"] == sum(v.startswith(e + ":") for v in voices)


def test_group_key_prefers_a_real_field():
    from edgeasr.evaluation.evaluate import group_key

    assert group_key({"voice": "flite:slt", "engine": "mine"}, "engine") == "mine"
    assert group_key({"voice": "flite:slt"}, "engine") == "flite"
    assert group_key({"voice": "speaker7"}, "engine") is None
    assert group_key({"speaker": 3}, "speaker") == "3"


@pytest.mark.parametrize("extra, needle", [
    (["--by", "nosuchfield"], "no row has the field 'nosuchfield' (fields: voice)"),
    (["--direction", "l2r,sideways"], "unknown direction mode 'sideways'"),
])
def test_eval_bad_options_are_one_line(corpus, extra, needle):
    p = run(EDGEASR + ["eval", "default", "--test", str(corpus / "test.jsonl"), *extra], check=False)
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr


def test_init_fine_tunes_a_shipped_model_keeping_its_config_and_normalisation(corpus, tmp_path):
    from safetensors.torch import load_file

    from edgeasr.models.config import EncoderConfig
    from edgeasr.pretrained import resolve_model_dir

    run_dir = tmp_path / "ft"
    run(EDGEASR + ["train", "--init", "default", "--vtlp", "0.1", "--noise-snr", "3,30",
                   "--train", str(corpus / "train.jsonl"), "--dev",
                   str(corpus / "dev.jsonl"), "--out", str(run_dir), "--max-steps", "1", "--batch-frames", "4000",
                   "--threads", "1"])
    src = resolve_model_dir("default")
    shipped, tuned = json.loads((src / "config.json").read_text()), json.loads((run_dir / "config.json").read_text())
    assert tuned["model"] == EncoderConfig.from_dict(shipped["model"]).to_dict()  # options added since default
    assert tuned["train"]["init"] == "default" and tuned["train"]["vtlp"] == 0.1
    assert tuned["train"]["noise_snr"] == [3.0, 30.0]
    # the card of a fine-tune shows how its starting weights were made, then the fine-tune itself
    assert tuned["command"].startswith(shipped["command"] + " && edgeasr train --init default")
    # what "default" meant when training started, recorded then (shipping the fine-tune replaces "default")
    from edgeasr.runtimes.files import sha256_file

    assert tuned["init_from"].startswith("rwkv-dirdrop-both as shipped before (model.safetensors sha256 "
                                         + sha256_file(src / "model.safetensors")[:12])
    a, b = load_file(src / "model.safetensors"), load_file(run_dir / "model.safetensors")
    assert torch_equal(a["feat_mean"], b["feat_mean"]) and torch_equal(a["feat_std"], b["feat_std"])


def test_init_can_add_an_input_floor_that_the_checkpoint_then_carries(corpus, tmp_path):
    from safetensors.torch import load_file

    from edgeasr.runtimes.features import FbankOptions
    from edgeasr.training.noise_augment import noise_floor

    run_dir = tmp_path / "floor"
    run(EDGEASR + ["train", "--init", "default", "--input-floor", "-80", "--train", str(corpus / "train.jsonl"),
                   "--dev", str(corpus / "dev.jsonl"), "--out", str(run_dir), "--max-steps", "1",
                   "--batch-frames", "4000", "--threads", "1"])
    assert json.loads((run_dir / "config.json").read_text())["model"]["input_floor_dbfs"] == -80.0
    floor = load_file(run_dir / "model.safetensors")["feat_floor"].float()
    assert torch_equal(floor, noise_floor(FbankOptions(), -80.0))
    p = run(EDGEASR + ["transcribe", str(run_dir), str(next((corpus / "wavs").rglob("*.wav"))), "--json"])
    assert json.loads(p.stdout)


def torch_equal(a, b):
    return bool((a.float() == b.float()).all())


@pytest.mark.parametrize("extra, needle", [
    (["--init", "/no/such/run"], "not a checkpoint directory"),
    (["--init", "default", "--d-model", "32"], "--init default: its weights do not fit this model config"),
    (["--init", "default", "--noise-snr", "30,3"], "LO must not exceed HI"),
    (["--init", "default", "--noise-snr", "loud"], "expected LO,HI in dB"),
    (["--init", "default", "--input-floor", "6"], "input_floor_dbfs must be within -150..0"),
    (["--init", "default", "--ema", "1.5"], "ema_decay must be 0 (off) or within (0, 1)"),
])
def test_init_mistakes_are_one_line(corpus, tmp_path, extra, needle):
    p = run(EDGEASR + ["train", *extra, "--train", str(corpus / "train.jsonl"), "--dev", str(corpus / "dev.jsonl"),
                       "--out", str(tmp_path / "r"), "--max-steps", "1", "--threads", "1"], check=False)
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "r" / "model.safetensors").exists()
