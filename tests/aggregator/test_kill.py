"""kill -9 during a burst: the chain verifies, receipted readings are kept, none twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from aggregator import rules
from aggregator.app import OK
from aggregator.store import Store
from tests.aggregator.burst_node import LIMITS, burst
from tests.aggregator.helpers import T0, World, open_store, stored_engine

COUNT = 400
ROOT = Path(__file__).resolve().parents[2]


def test_kill_9_during_a_burst(tmp_path: Path, world: World) -> None:
    path = tmp_path / "ledger.sqlite"
    command = [sys.executable, "-m", "tests.aggregator.burst_node", str(path), str(COUNT)]
    receipted: set[tuple[str, int]] = set()
    heights: set[int] = set()
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        for line in child.stdout:  # blocks until the child has committed and printed
            device_id, seq_text, height_text = line.split()
            receipted.add((device_id, int(seq_text)))
            heights.add(int(height_text))
            if len(heights) == 4:
                os.kill(child.pid, signal.SIGKILL)  # mid-burst: more blocks are coming
                break
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert len(receipted) > 3 * LIMITS.txs_max

    store = open_store(path, world)  # re-verifies the chain or raises store.corrupt
    assert isinstance(store, Store)
    state = store.load_state()
    for device_id, seq in receipted:
        assert state.devices[device_id].last_seq >= seq, (device_id, seq)
    store.close()

    # The devices re-send everything they hold no receipt for (here: everything).
    engine = stored_engine(path, world, LIMITS)
    codes = []
    for index, raw in enumerate(burst(world, COUNT)):
        codes.append(engine.submit(raw, T0 + 100 + index * 0.01).code)
        engine.handle_timeout(T0 + 100 + index * 0.01)
    engine.handle_timeout(T0 + 200)
    assert all(code in (OK, rules.DUPLICATE, rules.REPLAY) for code in codes)
    assert engine.app.state.batches == COUNT
    rows = engine.store._conn.execute("SELECT leaf FROM reading").fetchall()  # type: ignore[attr-defined]
    assert len(rows) == COUNT == len({bytes(leaf) for (leaf,) in rows})
