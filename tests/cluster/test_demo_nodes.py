"""`gridledger demo --nodes 4`: the demo's agents, faults and reconciliation on a cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_with_four_validators_reconciles(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gridledger", "demo", "--nodes", "4", "--duration", "12",
         "--meters", "2", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=150, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "cluster of 4 validators up" in done.stdout
    assert "RECONCILED" in done.stdout
    hashes = next(line for line in done.stdout.splitlines() if "last block hash" in line)
    assert len({part.split("'")[1] for part in hashes.split(": ")[2:]}) == 1, hashes
