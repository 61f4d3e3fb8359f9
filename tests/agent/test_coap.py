"""The Pi agent over CoAP: batches POSTed confirmable, receipts fetched, the queue empties."""

from __future__ import annotations

from pathlib import Path

from tests.agent import harness
from tests.agent.conftest import Mosquitto, free_port, wait_until
from tests.agent.test_mqtt import queued


def test_coap_uplink_backs_off_then_delivers_every_seq_block_wise(
        tmp_path: Path, sims: harness.Sims) -> None:
    identity = harness.make_identity(tmp_path)
    # Four three-phase meters and the certificate make a batch over 1 KiB: block-wise.
    modbus = sims.start(tmp_path, "--profile", "sdm630", "--tcp", "127.0.0.1:0", "--units", "1-4")
    port = free_port()
    out = tmp_path / "arrivals.jsonl"
    responder = harness.responder(identity, out, tmp_path / "responder.log",
                                  "--coap-port", str(port))
    state = tmp_path / "state"
    meters = [f"sdm630@tcp://{modbus}?unit={unit}" for unit in (1, 2, 3, 4)]
    argv = harness.agent_argv(identity, state, meters,
                              "--coap", f"coap://127.0.0.1:{port}", "--interval-s", "0.1")
    agent = harness.Process(argv, tmp_path / "agent.log")
    try:
        agent.start()  # nobody answers yet: the uplink backs off, the queue grows
        wait_until(lambda: "coap_down" in agent.text() and queued(state)[1] >= 5, 30,
                   "batches queued while the endpoint is down")
        responder.start()
        wait_until(lambda: queued(state)[0] >= 15 and queued(state)[1] == 0, 60,
                   "15 batches made and all confirmed")
        code = agent.terminate()
    finally:
        agent.kill()
        responder.kill()
    assert code == 0, agent.text()
    last_seq, depth = queued(state)
    got = harness.arrivals(out)
    assert not [a for a in got if "error" in a]
    assert {a["seq"] for a in got} == set(range(1, last_seq + 1))
    assert {a["via"] for a in got} == {"coap"} and depth == 0
    assert min(a["bytes"] for a in got) > 1024
    assert "Traceback" not in agent.text()


def test_both_uplinks_at_once_settle_each_batch_once(
        tmp_path: Path, sims: harness.Sims, mosquitto: Mosquitto) -> None:
    identity = harness.make_identity(tmp_path)
    modbus = sims.start(tmp_path, "--profile", "sdm120", "--tcp", "127.0.0.1:0")
    port = free_port()
    out = tmp_path / "arrivals.jsonl"
    responder = harness.responder(identity, out, tmp_path / "responder.log", "--mqtt",
                                  mosquitto.url, "--coap-port", str(port)).start()
    state = tmp_path / "state"
    argv = harness.agent_argv(identity, state, [f"sdm120@tcp://{modbus}?unit=1"],
                              "--coap", f"coap://127.0.0.1:{port}", "--mqtt", mosquitto.url,
                              "--interval-s", "0.1")
    agent = harness.Process(argv, tmp_path / "agent.log")
    try:
        wait_until(lambda: "coap ready" in responder.text()
                   and "mqtt ready" in responder.text(), 15, "the responder")
        agent.start()
        wait_until(lambda: queued(state)[0] >= 10, 30, "10 batches made")
        code = agent.terminate()
    finally:
        agent.kill()
        responder.kill()
    assert code == 0, agent.text()
    last_seq, depth = queued(state)
    got = harness.arrivals(out)
    assert {a["seq"] for a in got} == set(range(1, last_seq + 1)) and depth == 0
    assert {a["via"] for a in got} == {"coap", "mqtt"}
    counters = harness.status(state)["agent"]["outbox"]["counters"]
    assert counters["committed"] == last_seq  # each batch settled once, by either uplink
