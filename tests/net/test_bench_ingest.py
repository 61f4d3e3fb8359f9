"""`just bench-ingest` on a few devices: every batch committed over both paths, and a table."""

from __future__ import annotations

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

    assert bench_ingest.main(["--devices", "40", "--batches", "2", "--inflight", "8"]) == 0
    out = capsys.readouterr().out
    assert "signed 80 batches of 40 devices" in out
    assert "verify_message, 2 processes" in out
    for transport in ("direct", "coap"):
        [line] = [x for x in out.splitlines() if x.startswith(f"committed, {transport}")]
        assert "B/reading on disk" in line and "INCOMPLETE" not in line, out
        assert "p50 nan" not in line, out  # receipts were matched to their batches
    assert "goal: committed >= 0.6 of the limit" in out
