"""The Pi agent end to end: simulated meters, a real Mosquitto, receipts, kill -9."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from tests.agent import harness
from tests.agent.conftest import Mosquitto, free_port, wait_until


def confirmed(state_dir: Path) -> int:
    if not (state_dir / "queue.sqlite3").exists():
        return 0
    db = sqlite3.connect(f"file:{state_dir / 'queue.sqlite3'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'last_confirmed'").fetchone()
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()
    return int(row[0]) if row else 0


def queued(state_dir: Path) -> tuple[int, int]:
    """(last seq made, queue depth) straight from the agent's database."""
    if not (state_dir / "queue.sqlite3").exists():
        return 0, 0
    db = sqlite3.connect(f"file:{state_dir / 'queue.sqlite3'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        depth = db.execute("SELECT count(*) FROM queue").fetchone()[0]
    except sqlite3.OperationalError:
        return 0, 0
    finally:
        db.close()
    return (int(row[0]) if row else 0), int(depth)


def test_batches_with_faulty_meters_arrive_verified_and_status_tells(
        tmp_path: Path, mosquitto: Mosquitto, sims: harness.Sims) -> None:
    identity = harness.make_identity(tmp_path)
    modbus = sims.start(tmp_path, "--profile", "sdm630", "--tcp", "127.0.0.1:0", "--units",
                        "1-3", "--fault", "2:exception", "--fault", "3:silent")
    rtu = sims.start(tmp_path, "--profile", "sdm120", "--pty", "--fault", "1:crc")
    p1 = sims.start(tmp_path, "--profile", "dsmr5", "--pty", "--interval-s", "0.2")
    meters = [f"sdm630@tcp://{modbus}?unit={u}&timeout_s={t}" for u, t in ((1, 1), (2, 1),
                                                                          (3, 0.2))]
    meters += [f"sdm120@serial://{rtu}?unit=1&timeout_s=0.2",
               f"dsmr5@serial://{p1}?id=E0025000000001", "sdm120@tcp://127.0.0.1:9?unit=7"]
    out = tmp_path / "arrivals.jsonl"
    responder = harness.responder(identity, out, tmp_path / "responder.log",
                                  "--mqtt", mosquitto.url).start()
    state = tmp_path / "state"
    agent = harness.Process(harness.agent_argv(identity, state, meters, "--mqtt", mosquitto.url,
                                               "--interval-s", "0.2"),
                            tmp_path / "agent.log").start()
    try:
        wait_until(lambda: confirmed(state) >= 12, 40, "12 confirmed batches")
        doc = harness.status(state)
        code = agent.terminate()
    finally:
        agent.kill()
        responder.kill()
    assert code == 0, agent.text()
    got = harness.arrivals(out)
    assert not [a for a in got if "error" in a], got[:3]
    seen: dict[str, set[str]] = {}
    for arrival in got:
        for meter_id, meter_status in arrival["statuses"].items():
            seen.setdefault(meter_id, set()).add(meter_status)
    assert "ok" in seen["sdm630-1"] and "ok" in seen["E0025000000001"], seen
    assert seen["sdm630-2"] <= {"exception", "offline"}, seen
    assert seen["sdm630-3"] <= {"timeout", "offline"}, seen
    assert seen["sdm120-1"] <= {"crc", "offline"}, seen
    assert seen["sdm120-7"] <= {"connect", "offline"}, seen
    assert doc["queue"]["last_confirmed"] >= 12 and doc["agent"]["uplinks"]["mqtt"]["connected"]
    assert doc["agent"]["meters"]["sdm120-1"]["counters"]["crc"] > 0
    events = [e["event"] for e in harness.log_events(agent.text())]
    assert "agent_stopped" in events and "meter_status" in events
    assert "Traceback" not in agent.text()


def test_kill_9_mid_burst_and_broker_down_lose_and_reuse_no_seq(
        tmp_path: Path, mosquitto: Mosquitto, sims: harness.Sims, seed: int) -> None:
    rng = random.Random(seed)
    identity = harness.make_identity(tmp_path)
    modbus = sims.start(tmp_path, "--profile", "sdm120", "--tcp", "127.0.0.1:0", "--units", "1-2")
    meters = [f"sdm120@tcp://{modbus}?unit={u}" for u in (1, 2)]
    out = tmp_path / "arrivals.jsonl"
    responder = harness.responder(identity, out, tmp_path / "responder.log",
                                  "--mqtt", mosquitto.url).start()
    state = tmp_path / "state"
    argv = harness.agent_argv(identity, state, meters, "--mqtt", mosquitto.url,
                              "--interval-s", "0.05", "--ack-timeout-s", "1",
                              "--resend-max-s", "2", "--seed", str(seed))
    first = harness.Process(argv, tmp_path / "agent-1.log").start()
    second = harness.Process(argv, tmp_path / "agent-2.log")
    try:
        burst = rng.randrange(15, 40)
        wait_until(lambda: queued(state)[0] >= burst, 30, f"{burst} batches made")
        first.kill()  # SIGKILL in the middle of the burst: no drain, no goodbye
        killed_at = queued(state)[0]
        mosquitto.stop()
        second.start()
        wait_until(lambda: queued(state)[0] >= killed_at + 20, 30, "batches made offline")
        mosquitto.start()
        wait_until(lambda: queued(state)[1] == 0 and queued(state)[0] > killed_at + 20, 60,
                   "the queue to empty after the broker came back")
        code = second.terminate()
    finally:
        first.kill()
        second.kill()
        responder.kill()
        if mosquitto.proc is None:
            mosquitto.start()
    assert code == 0, second.text()
    last_seq, depth = queued(state)
    got = [a for a in harness.arrivals(out) if "seq" in a]
    assert not [a for a in harness.arrivals(out) if "error" in a]
    by_seq: dict[int, set[str]] = {}
    for arrival in got:
        by_seq.setdefault(arrival["seq"], set()).add(arrival["sha256"])
    assert sorted(by_seq) == list(range(1, last_seq + 1)), f"seed={seed}"
    reused = {seq: shas for seq, shas in by_seq.items() if len(shas) > 1}
    assert not reused, f"seqs signed twice with different content: {reused} seed={seed}"
    assert confirmed(state) == last_seq and depth == 0


def test_full_queue_drops_newest_with_a_log_line_and_a_counter(
        tmp_path: Path, sims: harness.Sims) -> None:
    identity = harness.make_identity(tmp_path)
    modbus = sims.start(tmp_path, "--profile", "sdm120", "--tcp", "127.0.0.1:0")
    state = tmp_path / "state"
    nobody = f"mqtt://127.0.0.1:{free_port()}"  # no broker: nothing is ever confirmed
    argv = harness.agent_argv(identity, state, [f"sdm120@tcp://{modbus}?unit=1"], "--mqtt",
                              nobody, "--interval-s", "0.05", "--queue-limit", "5")
    agent = harness.Process(argv, tmp_path / "agent.log").start()
    try:
        wait_until(lambda: "batches_dropped_newest" in agent.text(), 30, "a full queue")
        code = agent.terminate()
    finally:
        agent.kill()
    assert code == 0, agent.text()
    assert queued(state) == (5, 5)  # no seq was spent on a dropped batch
    doc = harness.status(state)
    assert doc["agent"]["outbox"]["counters"]["batches_dropped_newest"] >= 1
    dropped = [e for e in harness.log_events(agent.text())
               if e["event"] == "batches_dropped_newest"]
    assert dropped and dropped[0]["level"] == "warning" and dropped[0]["depth"] == 5
