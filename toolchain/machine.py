"""What machine a number was measured on (training cards, parity and bench reports)."""
from __future__ import annotations

import platform
from pathlib import Path

def cpu_name() -> str:
    """The CPU model name (/proc/cpuinfo), or what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
