"""Ingest rate through the whole shell: Mosquitto → MQTT → Ingress → verifier → twin node.

A separate publisher process (paho-mqtt) pushes `count` pre-signed batches at QoS 1 to a
Mosquitto started for the run, with `max_queued_messages` raised (Mosquitto's default of
1000 queued QoS 1 messages per client would drop the backlog the node holds back).  The
node is the in-memory twin with the inline verifier (verification on the event loop) or
the batching verifier (2 worker processes), or the real solo ledger (`EngineNode`, SQLite
in a temporary directory) without or with the precheck pool; the clock runs from the
first message in to the last one answered.

    python -m aggregator.net.bench [--count 4000] [--mosquitto /usr/sbin/mosquitto]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aggregator import node as node_mod
from edge import crypto

from .engine_node import EngineNode
from .server import NetConfig, NodeServer
from .twin import TwinNode
from .verifier import BatchingVerifier, InlineVerifier, _sample_messages

POLL_S = 0.005
# twin node with inline or pooled verification; the real solo ledger likewise
MODES = ("inline", "pool", "engine-inline", "engine-pool")
DEADLINE_S = 120.0


def _publish(port: int, messages: list[bytes]) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(256)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(f"gl/v1/gw-{i % 16:04d}/up", m, qos=1)
             for i, m in enumerate(messages)]
    for info in infos:
        info.wait_for_publish(60)
    client.loop_stop()
    client.disconnect()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _twin(mode: str, key: bytes, count: int) -> TwinNode:
    verifier = InlineVerifier(key) if mode == "inline" else BatchingVerifier(key)
    return TwinNode(key, crypto.SigningKey.generate(), verifier=verifier, mempool_max=count + 1)


def _engine_node(mode: str, key: bytes, directory: Path) -> tuple[EngineNode, Callable[[], None]]:
    """A real solo ledger in `directory`, for the registrar `key`."""
    ca_dir = directory / "ca"
    ca_dir.mkdir()
    (ca_dir / "registrar.pub").write_bytes(crypto.public_key_to_pem(key))
    node_mod.init(directory / "node", ca_dir, "gl-bench", int(time.time()) - 10)
    opened = node_mod.open_node(directory / "node")
    if mode == "engine-pool":
        return EngineNode.with_pool(opened.engine, key), opened.store.close
    return EngineNode(opened.engine), opened.store.close


async def _run_mode(mode: str, key: bytes, messages: list[bytes], port: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        node: TwinNode | EngineNode
        if mode.startswith("engine"):
            node, close = _engine_node(mode, key, Path(directory))
        else:
            node, close = _twin(mode, key, len(messages)), (lambda: None)
        try:
            return await _measure(node, mode, messages, port)
        finally:
            close()


async def _measure(node: TwinNode | EngineNode, mode: str, messages: list[bytes],
                   port: int) -> float:
    config = NetConfig(coap_port=0, http_port=0, mqtt_url=f"mqtt://127.0.0.1:{port}",
                       node_id=f"bench-{mode}", seed=1)
    await node.start()
    server = NodeServer(node, config)
    await server.start()
    try:
        assert server.mqtt is not None
        await asyncio.wait_for(server.mqtt.connected.wait(), 10)
        registry = server.metrics.registry

        def sample(name: str, labels: dict[str, str]) -> float:
            return registry.get_sample_value(name, labels) or 0.0

        publisher = multiprocessing.get_context("spawn").Process(
            target=_publish, args=(port, messages))
        publisher.start()
        first_by = time.perf_counter() + DEADLINE_S
        while sample("gl_net_messages_in_total", {"transport": "mqtt"}) < 1:
            if time.perf_counter() > first_by:
                raise RuntimeError("no message arrived from the publisher")
            await asyncio.sleep(POLL_S)
        started = time.perf_counter()
        def answered() -> float:
            return sum(sample("gl_net_admissions_total", {"transport": "mqtt", "outcome": o})
                       for o in ("accepted", "rejected"))

        deadline = started + DEADLINE_S
        while answered() < len(messages):
            if time.perf_counter() > deadline:
                raise RuntimeError(f"only {answered():.0f} of {len(messages)} answered "
                                   f"in {DEADLINE_S} s")
            await asyncio.sleep(POLL_S)
        elapsed = time.perf_counter() - started
        await asyncio.to_thread(publisher.join, 60)
        rejected = sample("gl_net_admissions_total", {"transport": "mqtt", "outcome": "rejected"})
        if rejected:
            codes = [line for line in server.metrics.render().decode().splitlines()
                     if line.startswith("gl_net_rejects_total{")]
            print(json.dumps({"mode": mode, "rejected": rejected, "codes": codes}))
        return len(messages) / elapsed
    finally:
        await server.shutdown()
        await node.shutdown()


def measure(count: int, mosquitto: str) -> dict[str, float]:
    key, messages = _sample_messages(count, int(time.time()))
    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "mosquitto.conf"
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                          "persistence false\nmax_queued_messages 100000\n")
        broker = subprocess.Popen([mosquitto, "-c", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)  # a benchmark, not a test: the broker's start-up is not timed
            rates: dict[str, float] = {"messages": count}
            for mode in MODES:
                rates[f"{mode}_per_s"] = asyncio.run(_run_mode(mode, key, messages, port))
            return rates
        finally:
            broker.terminate()
            broker.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--mosquitto", default="/usr/sbin/mosquitto")
    args = parser.parse_args()
    print(json.dumps({k: round(v) for k, v in measure(args.count, args.mosquitto).items()}))


if __name__ == "__main__":
    main()
