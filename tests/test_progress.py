"""One progress style (issue 35): a bar with time left on a terminal's stderr, nothing off a terminal or under
--json, checked on a real command (eval of the smallest shipped model on one synthetic utterance)."""
import json
import os
import pty
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from edgeasr.cli import main
from edgeasr.progress import progress_bar

BAR = "━"  # rich's bar glyph


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    d = tmp_path_factory.mktemp("progress")
    t = np.arange(16000) / 16000.0
    sf.write(d / "tone.wav", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000)
    (d / "test.jsonl").write_text(json.dumps({"audio_filepath": "tone.wav", "text": "go", "duration": 1.0}) + "\n")
    return d / "test.jsonl"


def _eval_args(test_set, *extra):
    return ["eval", "none", "--test", str(test_set), "--direction", "l2r", *extra]


def _on_a_terminal(args) -> tuple[str, str]:
    """Run the CLI with stderr on a pseudo-terminal; returns (stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TERM": "xterm", "COLUMNS": "120"}
    env.pop("FORCE_COLOR", None)
    p = subprocess.Popen([sys.executable, "-m", "edgeasr.cli", *args], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child has closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, shown.decode(errors="replace")[-1500:]
    return out.decode(), shown.decode(errors="replace")


def test_bar_on_a_terminal_with_done_total_and_time_left(test_set):
    _, shown = _on_a_terminal(_eval_args(test_set))
    assert BAR in shown and "1/1 utts" in shown and "0:00:0" in shown, shown[-1500:]


def test_no_bar_under_json_even_on_a_terminal(test_set):
    out, shown = _on_a_terminal(_eval_args(test_set, "--json"))
    assert BAR not in shown and "utts" not in shown, shown[-1500:]
    assert json.loads(out)[0]["utterances"] == 1


def test_no_bar_when_stderr_is_not_a_terminal(test_set):
    res = CliRunner().invoke(main, _eval_args(test_set))
    assert res.exit_code == 0, res.output
    assert BAR not in res.stderr and "utts" not in res.stderr, res.stderr


def test_time_left_follows_a_budget_the_task_knows():
    """Training's time left comes from its minute budget when that ends first (seconds_left), else from the rate."""
    bar = progress_bar(quiet=True)
    task = bar.add_task("train", total=100, completed=10, unit="steps", seconds_left=125.0)
    cells = [c.render(bar.tasks[task]).plain for c in bar.columns[2:]]
    assert cells[0] == "10/100 steps" and cells[-1] == "0:02:05"
