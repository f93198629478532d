"""The adversarial table of issue 33 (D1-D14) walked through the CLI, so the next regression shows up here.

Each case: command line -> exit code, a substring of the one-line ``error:`` (or of stderr), and, where the case is
about data loss, a check that nothing was written or overwritten. Tiny random models (d_model 32, 2 layers) are
exported once per module; the cases run in-process through click's CliRunner (the signal cases in real processes).
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
from click.testing import CliRunner

from edgeasr.cli import main
from test_runtimes import WAVS, _model

ROOT = Path(__file__).resolve().parents[1]
EDGEASR = [sys.executable, "-m", "edgeasr.cli"]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _edit_metadata(src: Path, dst: Path, **changes) -> Path:
    """A copy of ``src`` with metadata keys replaced (JSON values for vocab/states/fbank)."""
    m = onnx.load(str(src))
    for p in m.metadata_props:
        key = p.key[len("edgeasr."):]
        if key in changes:
            v = changes[key](json.loads(p.value) if key in ("vocab", "states", "fbank") else p.value)
            p.value = json.dumps(v) if key in ("vocab", "states", "fbank") else str(v)
    onnx.save(m, str(dst))
    return dst


def _grow_first_state(states):
    states[0]["shape"] = [s + 1 for s in states[0]["shape"]]
    return states


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """Workspace: tiny rwkv step/full graphs, its RUN_DIR, graphs with inconsistent metadata, audio, manifests."""
    import torch

    from edgeasr.exporters.onnx_export import export
    from edgeasr.models.checkpoint import save_checkpoint
    from edgeasr.runtimes.features import FbankOptions
    from edgeasr.runtimes.vocab import BLANK_ID, VOCAB

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("adv")
    m = _model("rwkv")
    config = {"features": FbankOptions().to_dict(), "vocab": list(VOCAB), "blank_id": BLANK_ID,
              "model": m.cfg.to_dict()}
    for kind in ("step", "full"):
        export(m, config, d / f"{kind}.onnx", kind, "l2r", 32, verify=False)
    save_checkpoint(d / "run", m, {"features": config["features"], "vocab": config["vocab"], "blank_id": BLANK_ID})
    step = d / "step.onnx"
    _edit_metadata(step, d / "vocab_short.onnx", vocab=lambda v: v[:10])
    _edit_metadata(step, d / "vocab_long.onnx", vocab=lambda v: v + ["x"] * 5)
    _edit_metadata(step, d / "blank_99.onnx", blank_id=lambda v: 99)
    _edit_metadata(step, d / "blank_neg.onnx", blank_id=lambda v: -1)
    _edit_metadata(step, d / "state_shape.onnx", states=_grow_first_state)
    _edit_metadata(step, d / "rate_8k.onnx", sample_rate=lambda v: 8000)
    plain = onnx.load(str(step))
    del plain.metadata_props[:]
    onnx.save(plain, str(d / "foreign.onnx"))
    (d / "empty.onnx").write_bytes(b"")
    rng = np.random.default_rng(0)
    speech = sf.read(WAVS[0], dtype="float32")[0][:16000 * 3] if WAVS else 0.1 * rng.standard_normal(32000)
    sf.write(d / "speech.wav", np.asarray(speech, np.float32), 16000)
    sf.write(d / "one.wav", np.zeros(1, np.float32), 16000)
    (d / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    rows = [{"audio_filepath": str(d / "speech.wav"), "text": "hello world", "duration": 2.0}] * 2
    (d / "calib.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "pcm.raw").write_bytes((rng.standard_normal(3200) * 3000).astype("<i2").tobytes())
    return d


def cli(args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def digest(*paths) -> dict:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def error_line(res) -> str:
    """The stderr of a failed command, asserted to be one ``error:`` line and no traceback."""
    lines = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith("notice:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr + repr(res.exception)
    return lines[0]


# --- the table: (case id, args with {w} for the workspace, exit code, substring of stderr) ---------------------
W = "{w}"
CASES = [
    # D1: no command writes over its own inputs
    ("D1-export-over-weights", ["export", f"{W}/run", "--kind", "step", "--out", f"{W}/run/model.safetensors",
                                "--no-verify"], 2, "is one of this command's inputs"),
    ("D1-export-over-config", ["export", f"{W}/run", "--kind", "full", "--out", f"{W}/run/config.json",
                               "--no-verify"], 2, "is one of this command's inputs"),
    ("D1-quantize-over-model", ["quantize", f"{W}/step.onnx", "--calib", f"{W}/calib.jsonl", "--out",
                                f"{W}/step.onnx"], 2, "is one of this command's inputs"),
    ("D1-quantize-over-calib", ["quantize", f"{W}/step.onnx", "--calib", f"{W}/calib.jsonl", "--out",
                                f"{W}/calib.jsonl"], 2, "is one of this command's inputs"),
    ("D1-quantize-report-over-model", ["quantize", f"{W}/step.onnx", "--calib", f"{W}/calib.jsonl", "--out",
                                       f"{W}/q.onnx", "--report", f"{W}/step.onnx"], 2,
     "is one of this command's inputs"),
    ("D1-parity-out-is-reference", ["parity", "--model", f"{W}/step.onnx", "--test", f"{W}/calib.jsonl",
                                    "--reference", f"{W}/run", "--out", f"{W}/run"], 2,
     "is one of this command's inputs"),
    # D2, D3, D7: rates and chunk sizes
    ("D2-rate-negative", ["transcribe", f"{W}/step.onnx", "--stdin", "--rate", "-1"], 2, "--rate -1 Hz is outside"),
    ("D7-rate-0", ["transcribe", f"{W}/step.onnx", "--stdin", "--rate", "0"], 2, "--rate 0 Hz is outside"),
    ("D7-rate-1", ["transcribe", f"{W}/step.onnx", "--stdin", "--rate", "1"], 2, "--rate 1 Hz is outside"),
    ("D7-rate-7", ["transcribe", f"{W}/step.onnx", "--stdin", "--rate", "7"], 2, "--rate 7 Hz is outside"),
    ("D7-rate-1e9", ["transcribe", f"{W}/step.onnx", "--stdin", "--rate", "1000000000"], 2, "is outside"),
    ("D3-chunk-nan", ["transcribe", f"{W}/step.onnx", f"{W}/speech.wav", "--stream", "--chunk-ms", "nan"], 2,
     "--chunk-ms must be a positive number"),
    ("D3-chunk-inf", ["transcribe", f"{W}/step.onnx", f"{W}/speech.wav", "--stream", "--chunk-ms", "inf"], 2,
     "--chunk-ms must be a positive number"),
    ("D3-chunk-0", ["transcribe", f"{W}/step.onnx", f"{W}/speech.wav", "--stream", "--chunk-ms", "0"], 2,
     "--chunk-ms must be a positive number"),
    ("D3-chunk-tiny-rounds-up", ["transcribe", f"{W}/step.onnx", f"{W}/speech.wav", "--stream", "--chunk-ms",
                                 "0.001"], 0, ""),
    # D4, D8: metadata that contradicts the graph
    ("D4-vocab-short", ["transcribe", f"{W}/vocab_short.onnx", f"{W}/speech.wav"], 2,
     "vocab_short.onnx: edgeasr.vocab has 10 tokens but the logprobs output has 29 columns"),
    ("D4-vocab-short-stream", ["transcribe", f"{W}/vocab_short.onnx", f"{W}/speech.wav", "--stream"], 2,
     "edgeasr.vocab has 10 tokens"),
    ("D4-vocab-short-eval", ["eval", f"{W}/vocab_short.onnx", "--test", f"{W}/calib.jsonl"], 2,
     "edgeasr.vocab has 10 tokens"),
    ("D4-vocab-short-openvino", ["transcribe", f"{W}/vocab_short.onnx", f"{W}/speech.wav", "--backend",
                                 "openvino"], 2, "edgeasr.vocab has 10 tokens"),
    ("D8-blank-99", ["transcribe", f"{W}/blank_99.onnx", f"{W}/speech.wav"], 2,
     "blank_99.onnx: edgeasr.blank_id 99 is outside the vocabulary"),
    ("D8-blank-negative", ["transcribe", f"{W}/blank_neg.onnx", f"{W}/speech.wav", "--stream"], 2,
     "edgeasr.blank_id -1 is outside the vocabulary"),
    ("D8-vocab-long", ["transcribe", f"{W}/vocab_long.onnx", f"{W}/speech.wav"], 2,
     "edgeasr.vocab has 34 tokens but the logprobs output has 29 columns"),
    ("D8-blank-parity", ["parity", "--model", f"{W}/blank_99.onnx", "--test", f"{W}/calib.jsonl", "--reference",
                         f"{W}/run", "--out", f"{W}/parity"], 2, "blank_99.onnx: edgeasr.blank_id 99"),
    # D5: a full graph on a file too short for one feature frame
    ("D5-full-1-sample-ort", ["transcribe", f"{W}/full.onnx", f"{W}/one.wav"], 0, ""),
    ("D5-full-1-sample-openvino", ["transcribe", f"{W}/full.onnx", f"{W}/one.wav", "--backend", "openvino"], 0, ""),
    # D12: quantize options
    ("D12-max-samples-0", ["quantize", f"{W}/step.onnx", "--calib", f"{W}/calib.jsonl", "--out", f"{W}/q.onnx",
                           "--max-samples", "0"], 2, "--max-samples must be >= 1"),
    ("D12-max-fallback-2", ["quantize", f"{W}/step.onnx", "--calib", f"{W}/calib.jsonl", "--out", f"{W}/q.onnx",
                            "--max-fallback", "2"], 2, "--max-fallback is a fraction"),
    ("D12-max-fallback-negative", ["quantize", f"{W}/step.onnx", "--calib", f"{W}/calib.jsonl", "--out",
                                   f"{W}/q.onnx", "--max-fallback", "-0.1"], 2, "--max-fallback is a fraction"),
    # D13: messages name the file
    ("D13-quantize-foreign", ["quantize", f"{W}/foreign.onnx", "--calib", f"{W}/calib.jsonl", "--out",
                              f"{W}/q.onnx"], 2, "foreign.onnx: no edgeasr metadata"),
    ("D13-rate-mismatch", ["transcribe", f"{W}/rate_8k.onnx", f"{W}/speech.wav"], 2,
     "rate_8k.onnx: edgeasr.sample_rate 8000 disagrees with edgeasr.fbank sample_rate 16000"),
    ("D13-inspect-empty", ["inspect", f"{W}/empty.onnx"], 2, "empty.onnx: empty file (0 bytes)"),
    ("D13-inspect-state-warning", ["inspect", f"{W}/state_shape.onnx"], 0,
     "warning: {w}/state_shape.onnx: state subsampling.conv1.cache has shape [3, 81] in metadata but the graph "
     "input in.subsampling.conv1.cache is [2, 80]"),
    ("D13-inspect-blank-warning", ["inspect", f"{W}/blank_99.onnx"], 0, "warning: {w}/blank_99.onnx: edgeasr.blank_id"),
    ("D13-state-shape-errors-elsewhere", ["transcribe", f"{W}/state_shape.onnx", f"{W}/speech.wav", "--backend",
                                          "openvino"], 2, "state_shape.onnx: state subsampling.conv1.cache"),
    # already solid before issue 33: keep them that way
    ("ok-corrupt-audio", ["transcribe", f"{W}/step.onnx", f"{W}/bad.wav"], 2, "bad.wav"),
    ("ok-not-onnx", ["transcribe", f"{W}/calib.jsonl", f"{W}/speech.wav", "--backend", "ort"], 2,
     "not a readable ONNX file"),
    ("ok-full-graph-stream", ["transcribe", f"{W}/full.onnx", f"{W}/speech.wav", "--stream"], 2, "cannot stream"),
]


@pytest.mark.parametrize("case,args,code,needle", CASES, ids=[c[0] for c in CASES])
def test_cli_case(w, case, args, code, needle):
    protected = [w / "run" / "model.safetensors", w / "run" / "config.json", w / "step.onnx", w / "calib.jsonl"]
    before = digest(*protected)
    res = cli([a.format(w=w) for a in args], input=(w / "pcm.raw").read_bytes() if "--stdin" in args else None)
    assert res.exit_code == code, (res.stdout, res.stderr, res.exception)
    if code == 2:
        assert needle.format(w=w) in error_line(res)
    else:
        assert needle.format(w=w) in res.stderr + res.stdout, res.stderr
        assert res.exception is None, res.exception
    assert digest(*protected) == before  # D1: no input was touched, whatever the case did
    assert not list(w.glob(".*.tmp")) and not (w / "q.onnx").exists()


def test_d1_symlink_and_hardlink_to_an_input_are_refused(w, tmp_path):
    before = digest(w / "run" / "model.safetensors")
    (tmp_path / "link.onnx").symlink_to(w / "run" / "model.safetensors")
    os.link(w / "run" / "model.safetensors", tmp_path / "hard.onnx")
    for out in ("link.onnx", "hard.onnx"):
        res = cli(["export", w / "run", "--kind", "step", "--out", tmp_path / out, "--no-verify"])
        assert res.exit_code == 2 and "is one of this command's inputs" in error_line(res)
    assert digest(w / "run" / "model.safetensors") == before


def test_d1_replacing_an_unrelated_output_says_so(w, tmp_path):
    out = tmp_path / "old.onnx"
    out.write_bytes(b"an older export")
    res = cli(["export", w / "run", "--kind", "step", "--out", out, "--no-verify"])
    assert res.exit_code == 0, res.stderr
    assert f"notice: replacing existing {out}" in res.stderr
    assert out.read_bytes()[:20] != b"an older export"


def test_d1_lm_build_refuses_an_out_that_holds_its_text(tmp_path):
    lm_dir = tmp_path / "lm"
    lm_dir.mkdir()
    (lm_dir / "text.txt").write_text("hello world\n")
    res = cli(["lm", "build", "--out", lm_dir, "--text", lm_dir / "text.txt"])
    assert res.exit_code == 2 and "one of this command's inputs" in error_line(res)
    assert (lm_dir / "text.txt").read_text() == "hello world\n"


def test_d9_manifest_lines_split_on_newline_only(w, tmp_path):
    from edgeasr.data.manifest import read_manifest

    rows = [json.dumps({"audio_filepath": str(w / "speech.wav"), "text": f"a{sep}b", "duration": 2.0},
                       ensure_ascii=False) for sep in ("\u2028", "\u0085", "\u2029")]
    m = tmp_path / "odd.jsonl"
    m.write_text("\n".join([rows[0], rows[1], "{not json", rows[2]]) + "\n", encoding="utf-8")
    entries = read_manifest(m, on_error="skip", warn=lambda msg: None)
    assert len(entries) == 3 and [e.row for e in entries] == [1, 2, 4]
    assert entries.warnings == [f"{m} row 3: " + entries.warnings[0].split(": ", 1)[1]]
    res = cli(["eval", w / "step.onnx", "--test", m, "--skip-bad-rows", "--json"])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)[0]["utterances"] == 3 and f"{m} row 3" in res.stderr


def test_d10_resume_needs_a_checkpoint_and_keeps_its_config(w, tmp_path):
    common = ["--train", w / "calib.jsonl", "--dev", w / "calib.jsonl"]
    res = cli(["train", *common, "--out", tmp_path / "empty", "--resume", "--mixer", "rwkv"])
    assert res.exit_code == 2 and "holds no training checkpoint" in error_line(res)
    assert not (tmp_path / "empty").exists()
    # a resumable run (config with model and train sections + train_state.json), trained as rwkv d_model 32
    from edgeasr.training.train import TrainConfig
    import dataclasses

    run = tmp_path / "run"
    run.mkdir()
    config = json.loads((w / "run" / "config.json").read_text())
    config["train"] = dataclasses.asdict(TrainConfig())
    (run / "config.json").write_text(json.dumps(config))
    (run / "train_state.json").write_text("{}")
    for opt, value in (("--mixer", "mha"), ("--d-model", "64"), ("--layers", "3"), ("--lr", "0.1")):
        res = cli(["train", *common, "--out", run, "--resume", opt, value])
        assert res.exit_code == 2, res.stderr
        assert f"--resume: {opt} {value} differs from the run's" in error_line(res)


def test_d11_eval_skip_bad_rows_skips_unreadable_audio(w, tmp_path):
    m = tmp_path / "m.jsonl"
    rows = [{"audio_filepath": str(w / "speech.wav"), "text": "a", "duration": 2.0},
            {"audio_filepath": str(w / "bad.wav"), "text": "b", "duration": 2.0}]
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = cli(["eval", w / "step.onnx", "--test", m])
    assert res.exit_code == 2 and "bad.wav" in error_line(res)
    res = cli(["eval", w / "step.onnx", "--test", m, "--skip-bad-rows", "--json"])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)[0]["utterances"] == 1
    assert f"{m} row 2: cannot read audio file {w / 'bad.wav'}" in res.stderr


# --- D14: killed runs ---------------------------------------------------------------------------------------------
def _env(tmpdir: Path) -> dict:
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmpdir)}


def _wait_for(pred, timeout: float = 120.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_d14_sigterm_during_quantize_cleans_up_like_sigint(w, tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "q.onnx"
    p = subprocess.Popen(EDGEASR + ["quantize", str(w / "step.onnx"), "--calib", str(w / "calib.jsonl"), "--out",
                                    str(out)], env=_env(tmpdir), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: any(tmpdir.glob("edgeasr-quant.*"))), "quantize never made its temp directory"
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 143 and "terminated" in err and "Traceback" not in err, err
    left = [q.name for q in tmpdir.iterdir() if q.name.startswith(("edgeasr-quant.", "ort.quant."))]
    assert left == [] and not out.exists() and not list(tmp_path.glob(".q.onnx.*.tmp"))


_SLOW_WRITER = """
import sys, time
from edgeasr.cli import _on_sigterm
import signal
signal.signal(signal.SIGTERM, _on_sigterm)
from edgeasr.runtimes.files import atomic_write
atomic_write(sys.argv[1], b"x" * 1000, check=lambda tmp: (print("writing", flush=True), time.sleep(60)))
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_d14_temp_file_of_a_killed_write(w, tmp_path, sig):
    """SIGTERM: the writer removes its own temp file. SIGKILL: it cannot; the next write to the same --out (an
    export) removes it, while a temp file of a live concurrent writer is left alone."""
    out = tmp_path / "model.onnx"
    p = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(out)], env=_env(tmp_path),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "writing"
        assert len(list(tmp_path.glob(".model.onnx.*.tmp"))) == 1
        p.send_signal(getattr(signal, sig))
        p.communicate(timeout=30)
    finally:
        p.kill()
    temps = list(tmp_path.glob(".model.onnx.*.tmp"))
    if sig == "SIGTERM":
        assert temps == [] and not out.exists()
        return
    assert len(temps) == 1  # SIGKILL leaves it ...
    live = tmp_path / f".model.onnx.{os.getpid()}.abcd1234.tmp"  # ... and this process is a live writer
    live.write_bytes(b"in progress")
    res = cli(["export", w / "run", "--kind", "step", "--out", out, "--no-verify"])
    assert res.exit_code == 0, res.stderr
    assert not temps[0].exists() and live.exists() and out.is_file()  # ... until the next run beside it


def test_d14_unowned_temp_files_go_after_a_minute(tmp_path):
    from edgeasr.runtimes.files import remove_stale_temps

    old, new = tmp_path / ".a.onnx.x1y2.tmp", tmp_path / ".a.onnx.z3w4.tmp"
    for f in (old, new):
        f.write_bytes(b"")
    os.utime(old, (time.time() - 120, time.time() - 120))
    other = tmp_path / ".a.onnx.b.1.x.tmp"  # a temp of "a.onnx.b", not of "a.onnx"
    other.write_bytes(b"")
    os.utime(other, (time.time() - 120, time.time() - 120))
    assert remove_stale_temps(tmp_path / "a.onnx") == [old]
    assert new.exists() and other.exists()
    build = tmp_path / ".lm.4999999.k3j2.tmp"  # an LM build directory of a dead pid (above any pid_max)
    (build / "sub").mkdir(parents=True)
    assert remove_stale_temps(tmp_path / "lm") == [build] and not build.exists()


# --- D6: offline transcription of any length in bounded memory ---------------------------------------------------
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking test process (hundreds of MB of torch)
_PEAK_RSS = """
import sys
from edgeasr.cli import main
try:
    main(["transcribe", sys.argv[1], sys.argv[2]])
except SystemExit as e:
    assert not e.code, e.code
print(next(int(ln.split()[1]) // 1024 for ln in open("/proc/self/status") if ln.startswith("VmHWM:")))
"""


def test_d6_offline_peak_memory_does_not_grow_with_the_file(w, tmp_path):
    """A 1-minute and a 20-minute file offline through the step graph: peak RSS within 30 MB (reading the file
    whole and featurizing it at once cost +276 MB here: 76 -> 352 MB); same transcript as --stream."""
    rng = np.random.default_rng(1)
    one = (0.05 * rng.standard_normal(16000 * 60)).astype(np.float32)
    peaks = {}
    for minutes in (1, 20):
        path = tmp_path / f"{minutes}.wav"
        with sf.SoundFile(path, "w", 16000, 1, "PCM_16") as f:
            for _ in range(minutes):
                f.write(one)
        p = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(w / "step.onnx"), str(path)], env=_env(tmp_path),
                           capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stderr[-2000:]
        peaks[minutes] = int(p.stdout.split()[-1])
    print(f"peak RSS MB: {peaks}")
    assert peaks[20] - peaks[1] < 30, peaks
    offline = cli(["transcribe", w / "step.onnx", tmp_path / "1.wav"])
    streamed = cli(["transcribe", w / "step.onnx", tmp_path / "1.wav", "--stream"])
    assert offline.exit_code == streamed.exit_code == 0 and offline.stdout == streamed.stdout


def test_d6_read_blocks_keeps_load_audio_checks(w, tmp_path):
    from edgeasr.runtimes.audio import load_audio, read_blocks
    from edgeasr.runtimes.errors import UserError

    x = (0.1 * np.random.default_rng(2).standard_normal(50_000)).astype(np.float32)
    sf.write(tmp_path / "st.wav", np.stack([x, -x], 1), 22050, subtype="FLOAT")
    blocks = list(read_blocks(tmp_path / "st.wav", block_seconds=1.0))
    assert [len(b) for _, b in blocks] == [22050, 22050, 50_000 - 44100] and blocks[0][0] == 22050
    assert np.allclose(np.concatenate([b for _, b in blocks]), 0.0)  # downmixed
    nan = x.copy()
    nan[40_000] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    for path, needle in ((tmp_path / "nan.wav", "NaN/Inf"), (w / "bad.wav", "bad.wav"),
                         (w / "empty.onnx", "empty (0 bytes)"), (tmp_path / "missing.wav", "not found")):
        for read in (lambda p: list(read_blocks(p, 1.0)), load_audio):
            with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
                read(path)
    truncated = tmp_path / "trunc.wav"
    sf.write(truncated, x, 16000)
    truncated.write_bytes(truncated.read_bytes()[:-1000])
    res = cli(["transcribe", w / "step.onnx", truncated])
    assert res.exit_code == 2 and "truncated" in error_line(res)


def test_shipped_default_long_file_offline_equals_stream(tmp_path):
    """The shipped default's step graph: a 3-minute file (a LibriVox clip repeated) offline equals --stream."""
    from edgeasr import pretrained

    if pretrained.resolve_model_dir("default") is None or not WAVS:
        pytest.skip("no shipped default model or no pocketsphinx-testdata")
    step = tmp_path / "default.step.onnx"
    assert cli(["export", "default", "--kind", "step", "--out", step, "--no-verify"]).exit_code == 0
    clip = sf.read(WAVS[0], dtype="float32")[0]
    long = np.tile(clip, int(np.ceil(180 * 16000 / len(clip))))[:180 * 16000]
    sf.write(tmp_path / "long.wav", long, 16000)
    offline = cli(["transcribe", step, tmp_path / "long.wav"])
    streamed = cli(["transcribe", step, tmp_path / "long.wav", "--stream"])
    assert offline.exit_code == streamed.exit_code == 0, offline.stderr + streamed.stderr
    assert offline.stdout == streamed.stdout and len(offline.stdout.split()) > 50
