"""Load a report page in headless Chromium at a given width and read back what its inline check script wrote into
``<body>`` (``edgeasr.evaluation.report_html.PAGE_CHECK``): figures drawn, sideways overflow, page errors."""
import re
import shutil
import subprocess
import tempfile

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed: make system-deps (apt-get install chromium)")
    return exe


def check_page(page, tmp_path, width: int = 1024) -> dict:
    """``{"plots", "plots_expected", "table_overflow", "scroll_width", "view_width"}`` as ints, plus ``errors`` (the
    page's recorded errors) and ``stderr``."""
    url = page.resolve().as_uri()
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    dom = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},2000",
                          "--virtual-time-budget=2000", "--dump-dom", url], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body is not None, dom.stdout[:500]
    out = {k.replace("-", "_"): int(v) for k, v in re.findall(r'data-([a-z-]+)="(\d+)"', body.group(1))}
    errors = re.search(r'<pre id="page-errors">(.*?)</pre>', dom.stdout, re.S)
    out["errors"] = None if errors is None else errors.group(1).strip()
    out["stderr"] = dom.stderr
    return out


def screenshot(page, shot, tmp_path, width: int = 1400) -> None:
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    r = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},1800",
                        "--hide-scrollbars", f"--screenshot={shot}", page.resolve().as_uri()], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and shot.is_file() and shot.stat().st_size > 10_000, r.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
