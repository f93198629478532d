"""tools/remote_finetune/run.sh end to end on the CPU: two fine-tunes side by side from a tiny Opus bundle, packed for
the trip back (fp16 best weights + json files in NAME.tar, fp16 raw final weights beside it)."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from edgeasr.models.checkpoint import load_checkpoint
from edgeasr.data.transcode import transcode_manifest

ROOT = Path(__file__).resolve().parents[1]
needs_tts = pytest.mark.skipif(not all(shutil.which(x) for x in ("espeak-ng", "flite", "festival", "bible")),
                               reason="needs Debian espeak-ng, flite, festival, bible-kjv")


@needs_tts
def test_remote_finetune_runs_side_by_side_and_packs_fp16(corpus, tmp_path):
    root = corpus
    bundle = tmp_path / "bundle"
    transcode_manifest(root / "train.jsonl", bundle / "train-tiny", kbps=12, jobs=1)
    transcode_manifest(root / "dev.jsonl", bundle / "dev", kbps=16, jobs=1)
    out, runs = tmp_path / "out", tmp_path / "runs"
    env = {**os.environ, "PY": sys.executable, "SKIP_PIP": "1", "BUNDLE": str(bundle), "RUNS": str(runs),
           "OUT": str(out), "MIN": "5", "EXTRA": "--max-steps 1 --threads 1"}
    res = subprocess.run(["bash", "tools/remote_finetune/run.sh", "a:0.001:20000", "b:0.0004:20000"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "a train rc 0" in res.stdout and "b train rc 0" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == ["a-last.safetensors", "a.tar", "all.txt", "b-last.safetensors",
                                                    "b.tar"]
    for name, lr in (("a", 0.001), ("b", 0.0004)):
        with tarfile.open(out / f"{name}.tar") as tar:
            tar.extractall(tmp_path / "back", filter="data")
        back = tmp_path / "back" / name
        assert json.loads((back / "config.json").read_text())["train"]["lr"] == lr
        assert all(v.dtype == torch.float16 for v in load_file(str(back / "model.safetensors")).values()
                   if v.is_floating_point())
        model, _ = load_checkpoint(back)  # a packed run loads like any run dir
        full, _ = load_checkpoint(runs / f"run-{name}")
        for k, v in model.state_dict().items():
            assert torch.allclose(v, full.state_dict()[k], atol=1e-2 * (1 + v.abs().max().item())), k
        last = load_file(str(out / f"{name}-last.safetensors"))
        assert last.keys() == load_file(str(runs / f"run-{name}" / "last.safetensors")).keys()
    assert (out / "all.txt").read_text().count("initialised from default") == 2
