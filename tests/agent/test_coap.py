"""The Pi agent over CoAP: batches POSTed confirmable, receipts fetched, the queue empties."""

from __future__ import annotations

from pathlib import Path

from tests.agent import harness
from tests.agent.conftest import free_port, wait_until
from tests.agent.test_mqtt import queued


def test_coap_uplink_delivers_every_seq_and_settles_on_receipts(
        tmp_path: Path, sims: harness.Sims) -> None:
    identity = harness.make_identity(tmp_path)
    modbus = sims.start(tmp_path, "--profile", "sdm120", "--tcp", "127.0.0.1:0")
    port = free_port()
    out = tmp_path / "arrivals.jsonl"
    responder = harness.responder(identity, out, tmp_path / "responder.log",
                                  "--coap-port", str(port)).start()
    state = tmp_path / "state"
    argv = harness.agent_argv(identity, state, [f"sdm120@tcp://{modbus}?unit=1"],
                              "--coap", f"coap://127.0.0.1:{port}", "--interval-s", "0.1")
    agent = harness.Process(argv, tmp_path / "agent.log")
    try:
        wait_until(lambda: "coap ready" in responder.text(), 15, "the CoAP responder")
        agent.start()
        wait_until(lambda: queued(state)[0] >= 15, 30, "15 batches made")
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
    assert "Traceback" not in agent.text()
