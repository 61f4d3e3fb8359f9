"""The commands as a technician runs them: `gridledger sim meter` in one process,
`gridledger edge read/scan` in another, over loopback TCP and a pseudo-terminal."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.meters.conftest import LOOPBACK, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def gridledger(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gridledger", *args], capture_output=True,
                          text=True, timeout=timeout_s, cwd=ROOT, check=False)


@contextmanager
def simulator(*args: str) -> Iterator[str]:
    """Start `gridledger sim meter ARGS`; yield the first line of its stdout."""
    proc = subprocess.Popen([sys.executable, "-m", "gridledger", "sim", "meter", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20.0)
        assert ready, "simulator printed nothing within 20 s"
        line = proc.stdout.readline().decode().strip()
        assert line, proc.stderr.read().decode() if proc.stderr else "no output"
        yield line
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def test_sim_tcp_then_read_once_json_and_scan(seed: int) -> None:
    with simulator("--profile", "sdm630", "--tcp", f"{LOOPBACK}:0", "--units", "1-3",
                   "--seed", str(seed), "--fault", "2:exception") as where:
        host, port = where.rsplit(":", 1)
        assert host == LOOPBACK and int(port) > 0
        done = gridledger("edge", "read", "--profile", "sdm630", "--host", where, "--once",
                          "--json")
        assert done.returncode == 0, done.stderr
        values = json.loads(done.stdout)
        assert values["1-0:1.8.0"]["u"] == "J" and values["1-0:32.7.0"]["u"] == "V"
        assert 200 < values["1-0:32.7.0"]["v"] < 260
        failed = gridledger("edge", "read", "--profile", "sdm630", "--host", where, "--unit",
                            "2", "--once", "--json")
        assert failed.returncode == 2
        assert failed.stderr.startswith("error [meter.exception]")
        scan = gridledger("edge", "scan", "--host", where, "--units", "1-4", "--json")
        assert scan.returncode == 0, scan.stderr
        found = {row["unit"]: row["guess"] for row in json.loads(scan.stdout)}
        assert found == {1: "sdm630", 2: "", 3: "sdm630"}


def test_sim_rtu_pty_then_read_table(seed: int) -> None:
    with simulator("--profile", "sdm120", "--pty", "--seed", str(seed)) as path:
        assert path.startswith("/dev/")
        done = gridledger("edge", "read", "--profile", "sdm120", "--port", path, "--once")
        assert done.returncode == 0, done.stderr
        assert "1-0:1.8.0" in done.stdout and "import energy" in done.stdout


def test_sim_p1_pty_then_read_json(seed: int) -> None:
    with simulator("--profile", "dsmr5", "--pty", "--interval-s", "0.1",
                   "--seed", str(seed)) as path:
        started = time.monotonic()
        done = gridledger("edge", "read", "--profile", "dsmr5", "--port", path, "--once",
                          "--json")
        assert done.returncode == 0, done.stderr
        values = json.loads(done.stdout)
        assert values["1-0:1.8.0"]["v"] == values["1-0:1.8.1"]["v"] + values["1-0:1.8.2"]["v"]
        assert time.monotonic() - started < 20


def test_user_errors_have_codes() -> None:
    unknown = gridledger("edge", "read", "--profile", "nope", "--host", f"{LOOPBACK}:1",
                         "--once")
    assert unknown.returncode == 2 and "error [profile.unknown]" in unknown.stderr
    nobody = gridledger("edge", "read", "--profile", "sdm120", "--host",
                        f"{LOOPBACK}:{free_port()}", "--once", "--timeout-s", "0.5")
    assert nobody.returncode == 2 and "error [meter.connect]" in nobody.stderr
    bad_fault = gridledger("sim", "meter", "--profile", "sdm120", "--tcp", f"{LOOPBACK}:0",
                           "--fault", "1:explode")
    assert bad_fault.returncode == 2 and "error [local.misuse]" in bad_fault.stderr
