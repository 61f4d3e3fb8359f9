"""Locust for a few seconds against a real node (real Mosquitto, CoAP and HTTP on
loopback): gateways over both transports and residents, reports written, gates green;
the same statistics judged against an impossible gate must fail it."""

from __future__ import annotations

import csv
import importlib.util
import shutil
from pathlib import Path

import pytest

from loadtest import run
from loadtest.common import Gate, gates

# Only looked up, never imported here: locust monkey-patches the process with gevent.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (the dev extra has it)", allow_module_level=True)


def test_mixed_run_writes_reports_and_passes_its_gates(tmp_path: Path) -> None:
    if shutil.which(run.MOSQUITTO) is None:
        pytest.skip("mosquitto is not installed")
    out = tmp_path / "mixed"
    status = run.main(["mixed", "--users", "4", "--duration", "5", "--out", str(out)])
    stats = out / "mixed_stats.csv"
    assert status == 0, (out / "mixed_verdict.txt").read_text()
    for name in ("mixed.html", "mixed_stats_history.csv", "machine.txt", "mixed_verdict.txt"):
        assert (out / name).exists(), name
    with open(stats, newline="") as handle:
        names = {row["Type"] + " " + row["Name"] for row in csv.DictReader(handle)}
    assert {"MQTT uplink sign→receipt", "CoAP uplink sign→receipt",
            "GET /v1/meters/{meter}/readings"} <= names
    assert gates(stats, Gate(error_ratio_max=0.01, p99_ms_max=1.0))  # nothing is that fast


def write_stats(path: Path, rows: list[tuple[str, int, int, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Type", "Name", "Request Count", "Failure Count", "99%"])
        for name, requests, failures, p99 in rows:
            writer.writerow(["GET", name, requests, failures, p99])
        writer.writerow(["", "Aggregated", 0, 0, "1"])
    return path


def test_gates_judge_each_request_name(tmp_path: Path) -> None:
    good = write_stats(tmp_path / "a.csv", [("/a", 1000, 5, "300"), ("/b", 50, 0, "1900")])
    assert gates(good, Gate(0.01, 2000.0)) == []
    bad = write_stats(tmp_path / "b.csv", [("/a", 1000, 11, "300"), ("/b", 50, 0, "2100"),
                                           ("/c", 0, 0, "N/A")])
    failures = gates(bad, Gate(0.01, 2000.0))
    assert len(failures) == 3
    assert "GET /a: error ratio 0.011" in failures[0]
    assert "GET /b: p99 2100 ms" in failures[1]
    assert "GET /c: 0 requests" in failures[2]
    empty = write_stats(tmp_path / "c.csv", [])
    assert gates(empty, Gate()) == ["no requests were made"]
