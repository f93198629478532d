"""edgeasr bench / experiment dirdrop: report structure, cap bookkeeping, bad input. Behaviour only: no timing is
ever asserted (DESIGN.md §7)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeasr.runtimes.errors import UserError
from edgeasr.evaluation import bench as B

ROOT = Path(__file__).resolve().parents[1]
EDGEASR = [sys.executable, "-m", "edgeasr.cli"]
TINY = {"mha": {"heads": 2, "left_context": 8}, "rwkv": {"head_size": 16}, "mamba2": {}}


def _run(*args, cwd=ROOT):
    return subprocess.run([*EDGEASR, *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def _tiny_checkpoint(dest: Path, mixer: str, dirdrop: str = "none", p: float = 0.0) -> Path:
    import torch

    from edgeasr.models.checkpoint import save_checkpoint
    from edgeasr.models.config import EncoderConfig
    from edgeasr.models.conformer import Encoder
    from edgeasr.runtimes.features import FbankOptions
    from edgeasr.runtimes.vocab import BLANK_ID, VOCAB

    torch.manual_seed(0)
    cfg = EncoderConfig(mixer=mixer, mixer_options=TINY.get(mixer, {}), d_model=32, n_layers=2, conv_kernel=5,
                        dropout=0.0, direction="bi", dirdrop=dirdrop, dirdrop_p=p)
    enc = Encoder(cfg).eval()
    with torch.no_grad():
        enc.feat_mean.fill_(-8.0)
        enc.feat_std.fill_(4.0)
    save_checkpoint(dest, enc, {"features": FbankOptions().to_dict(), "vocab": list(VOCAB), "blank_id": BLANK_ID,
                                "subsampling": 4, "metrics": {"step": 1, "dev_wer": 1.0}})
    return dest


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    import numpy as np
    import soundfile as sf

    d = tmp_path_factory.mktemp("test_manifest")
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(["hello world", "the cat sat", "streaming speech"]):
        path = d / f"u{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(16000 + 4000 * i)).astype("float32"), 16000)
        rows.append({"audio_filepath": str(path), "text": text, "duration": (16000 + 4000 * i) / 16000})
    m = d / "test.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return m


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory, manifest):
    out = tmp_path_factory.mktemp("bench")
    report, paths = B.bench([], ["none", "mha"], [2.0, 8.0], ["ort"], ["full", "step"], out, threads=1,
                            cap_s=600, d_model=32, n_layers=2, mixer_options=TINY, test=manifest,
                            chunks_ms=[160, 320], sweep_mixers=["mha", "none"], sweep_limit=2)
    return report, paths


def test_parse_lengths_and_choices():
    assert B.parse_lengths("60m,10s,60s,10m") == [10.0, 60.0, 600.0, 3600.0]
    assert B.parse_lengths("1h,500ms,1.5min") == [0.5, 90.0, 3600.0]
    assert B.label_length(3600) == "1h" and B.label_length(600) == "10m" and B.label_length(2) == "2s"
    for bad in ("10x", "", "ten", "-5s", "0s", "10s,,abc"):
        with pytest.raises(UserError):
            B.parse_lengths(bad)
    assert B.parse_choices("all", ["a", "b"], "mixer") == ["a", "b"]
    with pytest.raises(UserError, match="unknown mixer transformer"):
        B.parse_choices("mha,transformer", ["mha", "none"], "mixer")


def test_fit_exponent():
    lengths = [10, 60, 600]
    assert B.fit_exponent(lengths, [2 * x for x in lengths]) == pytest.approx(1.0)
    assert B.fit_exponent(lengths, [3e-3 * x * x for x in lengths]) == pytest.approx(2.0)
    assert B.fit_exponent([10], [1.0]) is None


def test_bench_writes_every_cell_with_an_exponent(tiny_bench):
    report, paths = tiny_bench
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0
    on_disk = json.loads(paths["json"].read_text())
    assert on_disk["schema"] == B.SCHEMA and on_disk == json.loads(json.dumps(report))
    cells = report["longform"]["cells"]
    assert {(c["mixer"], c["kind"], c["backend"]) for c in cells} == {
        (m, k, "ort") for m in ("none", "mha") for k in ("full", "step")}
    for c in cells:
        assert [p["length"] for p in c["points"]] == ["2s", "8s"]
        for p in c["points"]:
            assert p["status"] == "ok", p
            assert p["time_s"] > 0 and p["mps"] > 0 and p["peak_rss_mb"] > 0
            assert p["out_frames"] == (p["frames"] + 3) // 4
        assert isinstance(c["exponent"], float) and isinstance(c["exponent_last"], float)
    assert {c["direction"] for c in cells if c["kind"] == "full"} == {"bi"}
    assert {c["direction"] for c in cells if c["kind"] == "step"} == {"l2r"}
    assert "random-init" in report["models_note"] and "synthetic fbank" in report["inputs_note"]
    md = paths["md"].read_text()
    assert "| mha | full | ort | bi |" in md and "| none | step | ort | l2r |" in md
    html = paths["html"].read_text()
    assert html.count('<figure class="plot">') == 2 and "encoder time vs length" in html and "RTF vs length" in html
    assert "b=" in html and "<script src" not in html and "<pre>" not in html  # tables are tables, not Markdown
    assert "<th class=\"l\">b last</th>" in html


def test_bench_html_in_headless_chromium(tiny_bench, tmp_path):
    """At 1024 px the page draws both figures (time/RTF/RSS vs length; the sweep's WER and RTF vs chunk) and
    nothing scrolls sideways."""
    from page_check import check_page, screenshot

    _, paths = tiny_bench
    page = check_page(paths["html"], tmp_path, width=1024)
    assert page["errors"] == "" and page["plots"] == page["plots_expected"] == 2, page
    assert page["scroll_width"] <= page["view_width"] and page["table_overflow"] == 0, page
    art_dir = ROOT / "work" / "artifacts" if (ROOT / ".git").exists() else tmp_path
    art_dir.mkdir(parents=True, exist_ok=True)
    screenshot(paths["html"], art_dir / "bench_report.png", tmp_path, width=1024)


def test_bench_html_without_matplotlib(tiny_bench, monkeypatch):
    import sys
    from html import escape

    from edgeasr.evaluation.plots import MISSING

    report, _ = tiny_bench
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # a device install: base dependencies only
    html = B.html(report)
    assert escape(MISSING) in html and "<figure" not in html and "<table>" in html


def test_chunk_sweep_rows(tiny_bench):
    report, paths = tiny_bench
    sw = report["sweep"]
    rows = sw["rows"]
    assert {(r["mixer"], r["mode"], r["chunk_ms"]) for r in rows} == {
        (m, mode, c) for m in ("mha", "none") for mode in ("chunk", "step") for c in (160, 320)}
    for r in rows:
        assert r["status"] == "ok" and 0 <= r["wer"] and r["rtf_median"] > 0 and r["utterances"] == 2
    assert {r["chunk_frames"] for r in rows} == {16, 32}
    assert "Chunk-size sweep" in paths["md"].read_text() and "WER is meaningless" in paths["md"].read_text()
    first = rows[0]["model"]
    for r in rows:  # 95 % bootstrap interval; every model after the first: paired ΔWER against it (issue 34)
        assert r["ci95"][0] <= r["wer"] <= r["ci95"][1]
        if r["model"] == first:
            assert "delta" not in r
        else:
            assert r["delta_vs"] == first
            assert r["delta_ci95"][0] <= r["delta"] <= r["delta_ci95"][1] and isinstance(r["significant"], bool)
    assert "ΔWER (points) against the first model" in paths["md"].read_text()


def test_cap_skips_are_recorded(tmp_path):
    report, paths = B.bench([], ["none"], [1.0, 2.0, 4.0], ["ort"], ["step"], tmp_path, cap_s=1e-9,
                            d_model=32, n_layers=2)
    (cell,) = report["longform"]["cells"]
    first, *rest = cell["points"]
    assert first["status"] == "ok"
    assert all(p["status"].startswith("skipped: cap") for p in rest)
    assert "skipped: cap" in paths["md"].read_text()


def test_memory_cap_kills_and_skips(tmp_path):
    report, _ = B.bench([], ["none"], [1.0, 2.0], ["ort"], ["full"], tmp_path, mem_cap_mb=1.0,
                        d_model=32, n_layers=2)
    a, b = report["longform"]["cells"][0]["points"]
    assert a["status"].startswith("killed: memory cap")
    assert b["status"].startswith("skipped: after 1s killed")


def test_unavailable_backend_is_listed_not_absent(tmp_path):
    report, _ = B.bench([], ["none"], [1.0], ["tensorrt"], ["full"], tmp_path, d_model=32, n_layers=2)
    (cell,) = report["longform"]["cells"]
    assert cell["points"][0]["status"].startswith("skipped: backend unavailable")


def test_experiment_dirdrop_table(tmp_path, manifest):
    from edgeasr.evaluation.experiment import dirdrop

    none = _tiny_checkpoint(tmp_path / "no-dd", "rwkv")
    both = _tiny_checkpoint(tmp_path / "dd-both", "rwkv", "both", 0.2)
    report, paths = dirdrop([str(both), str(none)], manifest, tmp_path / "out", limit=2)
    rows = {r["variant"]: r for r in report["rows"]}
    assert [r["variant"] for r in report["rows"]] == ["none", "r2l", "both"]
    assert rows["r2l"]["status"] == "not trained" and rows["r2l"]["wer"] == {}
    for v in ("none", "both"):
        assert rows[v]["status"] == "ok" and set(rows[v]["wer"]) == {"l2r", "alt", "bi"}
        assert rows[v]["utterances"] == 2
    assert rows["both"]["dirdrop_p"] == 0.2 and rows["both"]["path"] == str(both)
    for m in ("l2r", "alt", "bi"):  # intervals, and ΔWER paired against the no-DirDrop model (issue 34)
        assert rows["both"]["ci95"][m][0] <= rows["both"]["wer"][m] <= rows["both"]["ci95"][m][1]
        d, (lo, hi) = rows["both"]["delta"][m], rows["both"]["delta_ci95"][m]
        assert lo <= d <= hi and rows["both"]["significant"][m] == (not lo <= 0 <= hi)
    assert rows["both"]["delta_vs"] == str(none) and "delta" not in rows["none"]
    md = paths["md"].read_text()
    assert "| rwkv | DirDrop-R2L | - | - | - | - | - | - | not trained |" in md
    assert "| rwkv | DirDrop-Both | 0.2 |" in md
    assert json.loads(paths["json"].read_text())["rows"] == json.loads(json.dumps(report["rows"]))


def test_cli_experiment_dirdrop(tmp_path, manifest):
    ck = _tiny_checkpoint(tmp_path / "r2l", "mamba2", "r2l", 0.3)
    r = _run("experiment", "dirdrop", "--model", str(ck), "--test", str(manifest), "--out", str(tmp_path / "o"),
             "--limit", "1")  # the old spelling of --max-utterances: still works, says it is deprecated
    assert r.returncode == 0, r.stderr
    assert "notice: --limit is deprecated; use --max-utterances" in r.stderr
    assert "DirDrop-R2L" in r.stdout and "not trained" in r.stdout
    assert (tmp_path / "o" / "dirdrop.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["bench", "--model", "/nonexistent/run"], "not a checkpoint directory"),
    (["bench", "--mixers", "transformer"], "unknown mixer transformer"),
    (["bench", "--lengths", "10x"], "bad length '10x'"),
    (["bench", "--backends", "cuda"], "unknown backend cuda"),
    (["bench", "--kinds", "chunk"], "unknown graph kind chunk"),
    (["bench", "--test", "/nonexistent.jsonl"], "test manifest not found"),
    (["bench", "--chunks-ms", "abc"], "bad chunk sizes"),
    (["experiment", "dirdrop", "--model", "/nonexistent/run", "--test", "x.jsonl"], "test manifest not found"),
])
def test_cli_bad_input_one_line(tmp_path, args, message):
    r = _run(*args, "--out", str(tmp_path / "o"))
    assert r.returncode != 0
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_experiment_missing_model_and_unidirectional(tmp_path, manifest):
    r = _run("experiment", "dirdrop", "--model", "/nonexistent/run", "--test", str(manifest),
             "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "not a checkpoint directory" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    ck = _tiny_checkpoint(tmp_path / "mha", "mha")
    r = _run("experiment", "dirdrop", "--model", str(ck), "--test", str(manifest), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "not bidirectional" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_unwritable_out(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _run("bench", "--mixers", "none", "--lengths", "1s", "--out", str(blocker / "sub"))
    assert r.returncode != 0 and "cannot create output directory" in r.stderr


def test_chunk_sweep_runs_chunk_bi_for_bidirectional_mixers(tmp_path, manifest):
    """A bidirectional model in the sweep also gets chunk-bi rows: one step graph per chunk size (issue 30)."""
    bm = B.random_model("rwkv", tmp_path / "rwkv", d_model=32, n_layers=2, mixer_options={"head_size": 16},
                        conv_kernel=5)
    rows = B.sweep([bm], [160, 320], ["ort"], manifest, 2, tmp_path, threads=1)
    assert {(r["mode"], r["chunk_ms"]) for r in rows} == {(m, c) for m in ("chunk", "step", "chunk-bi")
                                                           for c in (160, 320)}
    cb = [r for r in rows if r["mode"] == "chunk-bi"]
    assert all(r["status"] == "ok" and r["direction"] == "chunk-bi" for r in cb)
    assert sorted(p.name for p in (tmp_path / "onnx").glob("*chunk-bi*")) == [
        "rwkv.chunk-bi.chunk-bi.16f.onnx", "rwkv.chunk-bi.chunk-bi.32f.onnx"]


def test_cli_json_report_and_old_cap_spellings(tmp_path):
    """bench --json prints bench.json on stdout (the tables and bar stay away); --cap-s (seconds) and --mem-cap-mb
    still work one release with a notice (issue 35)."""
    r = _run("bench", "--mixers", "none", "--lengths", "1s", "--kinds", "step", "--backends", "ort", "--json",
             "--cap-s", "30", "--mem-cap-mb", "4000", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["schema"] == B.SCHEMA and report["longform"]["cells"][0]["points"][0]["status"] == "ok"
    assert report["longform"]["cap_s"] == 30 and report["longform"]["mem_cap_mb"] == 4000
    assert "notice: --cap-s is deprecated; use --max-minutes-per-cell (minutes, not seconds)" in r.stderr
    assert "notice: --mem-cap-mb is deprecated; use --max-memory-mb" in r.stderr
    assert json.loads((tmp_path / "o" / "bench.json").read_text()) == report
