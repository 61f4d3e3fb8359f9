"""Fuzzed and malformed messages over CoAP and MQTT: never a crash, each one rejected with
a documented code and counted in /metrics.

One node (with the batching verifier and its process pool) runs in a background event
loop for the whole module; hypothesis drives it from the test thread with a fixed seed.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import aiocoap
import aiomqtt
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from aggregator.net.server import NodeServer
from aggregator.net.twin import TwinNode
from aggregator.net.verifier import BatchingVerifier

from .conftest import NODE_KEY, Pki, coap_post, loopback_config, wait_until

T = TypeVar("T")
SEED = 20261121
EXAMPLES = 60
KNOWN_PREFIXES = ("cbor.", "cose.", "batch.", "cert.", "net.", "mempool.", "rule.")


class Env:
    """A node, a CoAP client and an MQTT client living in a loop on another thread."""

    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 20) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    async def start(self) -> None:
        verifier = BatchingVerifier(self.pki.public_key, revoked=lambda: self.pki.revoked)
        self.node = TwinNode(self.pki.public_key, NODE_KEY, verifier=verifier)
        await self.node.start()
        self.server = NodeServer(self.node, loopback_config())
        await self.server.start()
        self.coap = await aiocoap.Context.create_client_context(transports=["udp6"])
        assert self.server.mqtt is not None
        self.mqtt = aiomqtt.Client("127.0.0.1", self.server.ports["mqtt"],
                                   protocol=aiomqtt.ProtocolVersion.V311)
        await self.mqtt.__aenter__()
        await wait_until(self.server.mqtt.connected.is_set, what="node subscribed")

    async def stop(self) -> None:
        """Stop what started (start may have failed half-way)."""
        if hasattr(self, "mqtt"):
            await self.mqtt.__aexit__(None, None, None)
        if hasattr(self, "coap"):
            await self.coap.shutdown()
        if hasattr(self, "server"):
            await self.server.shutdown()
        if hasattr(self, "node"):
            await self.node.shutdown()

    def sample(self, name: str, labels: dict[str, str]) -> float:
        return self.server.metrics.registry.get_sample_value(name, labels) or 0.0

    def close(self) -> None:
        self.call(self.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def env(pki: Pki) -> Iterator[Env]:
    environment = Env(pki)
    try:
        environment.call(environment.start())
        yield environment
    finally:
        environment.close()


def payloads(valid: bytes) -> st.SearchStrategy[bytes]:
    """Garbage, and the valid message flipped, cut, or with bytes inserted."""
    flipped = st.tuples(st.integers(0, len(valid) - 1), st.integers(1, 255)).map(
        lambda t: valid[:t[0]] + bytes([valid[t[0]] ^ t[1]]) + valid[t[0] + 1:])
    cut = st.integers(0, len(valid) - 1).map(lambda n: valid[:n])
    inserted = st.tuples(st.integers(0, len(valid)), st.binary(min_size=1, max_size=8)).map(
        lambda t: valid[:t[0]] + t[1] + valid[t[0]:])
    tagged = st.binary(max_size=64).map(lambda b: b"\xd2\x84" + b)  # tag 18, array(4)
    return st.one_of(st.binary(max_size=512), flipped, cut, inserted, tagged)


def assert_known(code: str) -> None:
    assert code.startswith(KNOWN_PREFIXES), code
    assert code != "net.node", "a decoder raised something undocumented"


def test_fuzzed_coap_posts_are_rejected_with_codes_and_counted(env: Env) -> None:
    valid = env.pki.device("gw-fuzz-coap").message(1)
    port = env.server.ports["coap"]
    first = env.call(coap_post(env.coap, port, valid))
    assert first.code == aiocoap.CHANGED
    before = env.sample("gl_net_admissions_total", {"transport": "coap", "outcome": "rejected"})
    sent: list[bytes] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @seed(SEED)
    @given(payload=payloads(valid))
    def one(payload: bytes) -> None:
        response = env.call(coap_post(env.coap, port, payload))
        sent.append(payload)
        text = response.payload.decode()
        assert response.code.is_successful() is False, (payload.hex(), text)
        assert_known(text.split(" ")[0])
        assert response.code.dotted != "5.00", text

    one()
    after = env.sample("gl_net_admissions_total", {"transport": "coap", "outcome": "rejected"})
    assert after - before == len(sent), f"seed {SEED}"
    assert env.node.submitted == [valid]


def test_fuzzed_mqtt_publishes_are_rejected_with_codes_and_counted(env: Env) -> None:
    valid = env.pki.device("gw-fuzz-mqtt").message(1)
    sent: list[bytes] = [valid]
    labels = {"transport": "mqtt", "outcome": "rejected"}
    before = env.sample("gl_net_admissions_total", labels)
    env.call(env.mqtt.publish("gl/v1/gw-fuzz-mqtt/up", valid, qos=1))

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @seed(SEED)
    @given(payload=payloads(valid))
    def one(payload: bytes) -> None:
        env.call(env.mqtt.publish("gl/v1/gw-fuzz-mqtt/up", payload, qos=1))
        sent.append(payload)

    one()

    def all_answered() -> bool:
        accepted = env.sample("gl_net_admissions_total", {"transport": "mqtt",
                                                          "outcome": "accepted"})
        return accepted + env.sample("gl_net_admissions_total", labels) - before >= len(sent)

    env.call(wait_until(all_answered, 20, what=f"all {len(sent)} answered (seed {SEED})"))
    assert env.sample("gl_net_admissions_total", labels) - before == len(sent) - 1
    assert valid in env.node.submitted
    with urllib.request.urlopen(f"http://127.0.0.1:{env.server.ports['http']}/metrics") as r:
        text = r.read().decode()
    codes = [line.split('code="')[1].split('"')[0] for line in text.splitlines()
             if line.startswith("gl_net_rejects_total{") and 'transport="mqtt"' in line]
    assert codes, text
    for code in codes:
        assert_known(code)
    assert env.sample("gl_net_rejects_total", {"transport": "mqtt", "code": "net.node"}) == 0

