"""`just bench-ingest` on a few devices: every batch committed over both paths, and a table."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_bench_ingest_commits_every_batch_directly_and_over_coap(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))  # also seen by the spawned device process
    sys.modules.pop("bench_ingest", None)
    import bench_ingest

    # enough batches that every process crosses many ticks of the CPU clock (10 ms)
    assert bench_ingest.main(["--devices", "200", "--batches", "2", "--inflight", "16"]) == 0
    out = capsys.readouterr().out
    assert "signed 400 batches of 200 devices" in out
    assert "; worst ratio " in out
    assert "verify_message, 2 processes" in out
    for transport in ("direct", "coap"):
        [line] = [x for x in out.splitlines() if x.startswith(f"committed, {transport}")]
        assert "B/reading on disk" in line and "INCOMPLETE" not in line, out
        assert "p50 nan" not in line, out  # receipts were matched to their batches
    assert "goal: committed >= 0.6 of the limit" in out
    for transport in ("direct", "coap"):  # and each path's own verdict under it
        assert re.search(rf"^  {transport} +\d\.\d\d \((met|not met)\)$", out, re.M), out
    # CPU per batch: the limit's, and each path's split into node process and workers
    [limit_line] = [x for x in out.splitlines() if x.strip().startswith("limit: verify_message")]
    assert float(limit_line.split()[2]) > 0, out
    for transport in ("direct", "coap"):
        [cpu_line] = [x for x in out.splitlines()
                      if x.strip().startswith(f"{transport}: node process + workers")]
        total_us, node_us, workers_us = _cpu_figures(cpu_line)
        assert node_us > 0 and workers_us > 0, cpu_line  # both sides did work
        assert abs(total_us - node_us - workers_us) <= 1, cpu_line
    coap_line = next(x for x in out.splitlines() if x.strip().startswith("coap:"))
    assert float(coap_line.split("; devices ")[1].split()[0]) > 0, coap_line
    assert out.count("accounted ratio") == 2, out


def _cpu_figures(line: str) -> tuple[float, float, float]:
    """(total, node process, workers) µs from '  direct: node process + workers  417
    (1.87)  = 140 + 277'."""
    head, split = line.split(" = ", 1)
    total = float(head.split("workers", 1)[1].split()[0])
    node, workers = (float(x.split(";")[0]) for x in split.split(" + "))
    return total, node, workers


def test_bench_ingest_repeats_and_judges_the_median(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("bench_ingest", None)
    import bench_ingest

    assert bench_ingest.main(["--devices", "20", "--batches", "1", "--inflight", "4",
                              "--transport", "direct", "--runs", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("signed 20 batches of 20 devices") == 3, out
    [summary] = [x for x in out.splitlines() if x.strip().startswith("direct ")]
    ratios = [float(x) for x in summary.split()[1:4]]
    assert summary.split()[-1] == f"{sorted(ratios)[1]:.2f}", summary  # the median
    assert "median over 3 runs of the worst ratio" in out
    with pytest.raises(SystemExit):
        bench_ingest.main(["--runs", "0"])
