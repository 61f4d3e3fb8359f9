"""`just bench-ingest` on a few devices: every batch committed over both paths, and a table."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def bench_ingest(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """bench/bench_ingest.py, imported afresh from the bench folder on sys.path (also
    seen by the spawned device process)."""
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("bench_ingest", None)
    return importlib.import_module("bench_ingest")


def test_bench_ingest_commits_every_batch_directly_and_over_coap(
    capsys: pytest.CaptureFixture[str], bench_ingest: ModuleType
) -> None:
    # enough batches that every process crosses many ticks of the CPU clock (10 ms)
    assert bench_ingest.main(["--devices", "200", "--batches", "2", "--inflight", "16"]) == 0
    out = capsys.readouterr().out
    assert "signed 400 batches of 200 devices" in out
    assert "judged on the node's pipeline (the direct path); one run " in out
    assert "verify_message, 2 processes" in out
    for transport in ("direct", "coap"):
        [line] = [x for x in out.splitlines() if x.startswith(f"committed, {transport}")]
        assert "B/reading on disk" in line and "INCOMPLETE" not in line, out
        assert "p50 nan" not in line, out  # receipts were matched to their batches
    assert "goal: committed >= 0.6 of the limit" in out
    # and CoAP's own ratio under it, beside what the CoAP shell alone allows
    assert re.search(r"^  coap +\d\.\d\d of the limit; its shell alone allows at most "
                     r"\d\.\d\d$", out, re.M), out
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
    # the shell alone: its own CPU a request, the devices', and the bound they give
    [shell_line] = [x for x in out.splitlines() if x.strip().startswith("coap shell alone")]
    assert float(shell_line.split("node process")[1].split()[0]) > 0, shell_line
    assert float(shell_line.split("; devices ")[1].split()[0]) > 0, shell_line
    [best_line] = [x for x in out.splitlines() if "coap at best" in x]
    best, limit_us, direct_us, shell_us = (
        float(x) for x in re.findall(r"\d+(?:\.\d+)?", best_line)[:4])
    assert abs(best - limit_us / (direct_us + shell_us)) < 0.01, best_line


def _cpu_figures(line: str) -> tuple[float, float, float]:
    """(total, node process, workers) µs from '  direct: node process + workers  417
    (1.87)  = 140 + 277'."""
    head, split = line.split(" = ", 1)
    total = float(head.split("workers", 1)[1].split()[0])
    node, workers = (float(x.split(";")[0]) for x in split.split(" + "))
    return total, node, workers


def test_bench_ingest_repeats_and_judges_the_median(
    capsys: pytest.CaptureFixture[str], bench_ingest: ModuleType
) -> None:
    assert bench_ingest.main(["--devices", "20", "--batches", "1", "--inflight", "4",
                              "--transport", "direct", "--runs", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("signed 20 batches of 20 devices") == 3, out
    [summary] = [x for x in out.splitlines() if x.strip().startswith("direct ")]
    ratios = [float(x) for x in summary.split()[1:4]]
    assert summary.split()[-1] == f"{sorted(ratios)[1]:.2f}", summary  # the median
    assert "(the direct path); median over 3 runs " in out
    with pytest.raises(SystemExit):
        bench_ingest.main(["--runs", "0"])


def test_bench_ingest_judges_the_direct_path_and_says_where_coap_stands(
    capsys: pytest.CaptureFixture[str], bench_ingest: ModuleType
) -> None:
    def report(direct: float, coap: float, best: float | None) -> object:
        return bench_ingest.RunReport({"direct": direct, "coap": coap},
                                      {"direct": direct + 0.01, "coap": coap}, best)

    reports = [report(0.62, 0.2, 0.4), report(0.58, 0.1, None), report(0.61, 0.3, 0.5)]
    bench_ingest.print_verdict(reports, {"direct": 0.61, "coap": 0.2})
    out = capsys.readouterr().out
    assert "(the direct path); median over 3 runs 0.61 (met; sustained 0.62)" in out, out
    assert "coap     0.20 of the limit; its shell alone allows at most 0.45" in out, out

    bench_ingest.print_verdict(reports[1:2], {"direct": 0.58})
    out = capsys.readouterr().out
    assert "(the direct path); one run 0.58 (not met; sustained 0.59)" in out, out
    assert "coap" not in out, out

    bench_ingest.print_verdict([bench_ingest.RunReport({"coap": 0.2}, {"coap": 0.2})],
                               {"coap": 0.2})
    out = capsys.readouterr().out
    assert "(the direct path), which this run left out" in out, out
    assert "coap     0.20 of the limit\n" in out, out
