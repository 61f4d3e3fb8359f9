"""What machine a figure was measured on: CPU model, cores, Python, load.

Benchmarks, load tests and the fleet simulator print this next to every figure, because
a rate means little without the machine and how busy it was.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def summary() -> str:
    """One line: CPU, cores, Python and the 1-minute load average now."""
    return (f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load {os.getloadavg()[0]:.2f}")
