"""`gridledger cluster up/status/down` as an operator runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aggregator.cluster import local

DEADLINE_S = 60.0


def gridledger(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gridledger", *args], capture_output=True,
                          text=True, timeout=DEADLINE_S, check=False)


def rows(directory: Path) -> list[list[str]]:
    done = gridledger("cluster", "status", "--dir", str(directory))
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines()[1:]]


def test_up_status_down(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    done = gridledger("cluster", "up", "--nodes", "4", "--dir", str(directory))
    described = json.loads((directory / "cluster.json").read_text()) \
        if (directory / "cluster.json").exists() else {"nodes": []}
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        assert [n["node_id"] for n in described["nodes"]] == [f"node-{i}" for i in range(4)]
        for entry in described["nodes"]:
            assert {"pid", "coap", "http", "peer"} <= set(entry) and entry["pid"] > 0
            assert (Path(entry["dir"]) / "node.key").stat().st_mode & 0o777 == 0o600
        assert (directory / "ca" / "registrar.pub").exists()
        deadline = time.monotonic() + DEADLINE_S
        while True:  # heights and last hashes side by side agree once a block is made
            table = rows(directory)
            heights = {r[3] for r in table}
            hashes = {r[4] for r in table}
            if len(heights) == 1 and len(hashes) == 1 and int(heights.pop()) >= 2:
                break
            assert time.monotonic() < deadline, table
            time.sleep(0.3)
        again = gridledger("cluster", "up", "--nodes", "4", "--dir", str(directory))
        assert again.returncode != 0 and "cluster.local" in again.stderr
        down = gridledger("cluster", "down", "--dir", str(directory))
        assert down.returncode == 0, down.stderr
        assert all(r[2] == "no" for r in rows(directory))
    finally:
        for entry in described["nodes"]:
            if local.alive(entry.get("pid")):
                os.kill(entry["pid"], signal.SIGKILL)
