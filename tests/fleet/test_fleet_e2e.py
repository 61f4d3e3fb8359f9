"""The fleet end to end: `gridledger sim fleet` against a real node process over a real
Mosquitto and real CoAP on loopback, with every kind of fault, reconciled clean; and a
fleet that cannot trust the receipts it gets is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from certs.registrar import Registrar
from tests.net.conftest import Mosquitto, mosquitto  # noqa: F401  (fixture)
from tests.ports import free_port

NODE_READY_S = 30.0
FLEET_TIMEOUT_S = 120.0
FAULTS = ("offline:2:3,drift:1,tamper:2,replay:2,rollback:2,backwards:1,clone:1,burst:25%")


def gridledger(*args: str) -> list[str]:
    return [sys.executable, "-m", "gridledger", *args]


def status(http_port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/status", timeout=1) as r:
            return dict(json.loads(r.read()))
    except OSError:
        return None


@pytest.fixture
def node(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[tuple[Path, int, int]]:  # noqa: F811
    Registrar.init(tmp_path / "ca")
    data = tmp_path / "node"
    subprocess.run(gridledger("aggregator", "init", "--data-dir", str(data), "--ca-dir",
                              str(tmp_path / "ca")), check=True, capture_output=True)
    coap, http = free_port(), free_port()
    log = open(tmp_path / "node.log", "wb")  # noqa: SIM115  (closed below)
    process = subprocess.Popen(
        gridledger("aggregator", "run", "--data-dir", str(data), "--mqtt-url", mosquitto.url,
                   "--coap", f"127.0.0.1:{coap}", "--http", f"127.0.0.1:{http}", "--no-pool"),
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + NODE_READY_S
        while status(http) is None:
            assert process.poll() is None, (tmp_path / "node.log").read_text()
            assert time.monotonic() < deadline, "node did not answer /v1/status"
            time.sleep(0.05)
        yield tmp_path, coap, http
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def fleet(tmp: Path, mosquitto: Mosquitto, coap: int, seed: int, *extra: str,  # noqa: F811
          genesis: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        gridledger("sim", "fleet", "--mqtt", mosquitto.url, "--coap", f"coap://127.0.0.1:{coap}",
                   "--ca-dir", str(tmp / "ca"), "--genesis",
                   str(genesis or tmp / "node" / "genesis.json"), "--seed", str(seed), *extra),
        capture_output=True, text=True, timeout=FLEET_TIMEOUT_S,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_fleet_with_every_fault_reconciles_clean(node: tuple[Path, int, int],
                                                 mosquitto: Mosquitto,  # noqa: F811
                                                 seed: int) -> None:
    tmp, coap, http = node
    result = fleet(tmp, mosquitto, coap, seed, "--devices", "14", "--meters-per-device", "2",
                   "--interval", "1", "--duration", "8", "--drain", "40", "--faults", FAULTS)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "reconciliation CLEAN" in out
    checked = next(line for line in out.splitlines() if "fault outcomes checked" in line)
    for kind in ("tamper 2", "rollback 2", "clone"):
        assert kind in checked, out
    node_status = status(http)
    assert node_status is not None
    committed = next(line for line in out.splitlines() if "committed exactly once" in line)
    assert "rejected for the expected reason" in committed


def test_receipts_under_another_chains_keys_do_not_reconcile(
        node: tuple[Path, int, int], mosquitto: Mosquitto, seed: int) -> None:  # noqa: F811
    tmp, coap, _ = node
    other = tmp / "other"
    Registrar.init(other / "ca")
    subprocess.run(gridledger("aggregator", "init", "--data-dir", str(other / "node"),
                              "--ca-dir", str(other / "ca")), check=True, capture_output=True)
    result = fleet(tmp, mosquitto, coap, seed, "--devices", "3", "--interval", "1",
                   "--duration", "2", "--drain", "3",
                   genesis=other / "node" / "genesis.json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "reconciliation FAILED" in result.stdout
    assert "never committed" in result.stdout
