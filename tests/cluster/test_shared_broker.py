"""A cluster behind one Mosquitto: `cluster up --mqtt-url`, as production runs it.

Four validator processes share the broker's subscription `$share/gl-aggregators/...`, so
each batch a gateway publishes reaches one validator; that validator, and only it,
publishes the signed receipt.  The test publishes batches of two gateways with paho and
reads `gl/v1/+/ack`: every batch is committed once on every node and receipted exactly
once, by a validator of the genesis.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from aggregator.cluster import local
from certs.registrar import Registrar
from edge import crypto
from edge.portable import batch as batch_mod
from edge.portable import receipt as receipt_mod
from gridledger import genesis as genesis_mod
from tests.net.conftest import Mosquitto
from tests.net.conftest import mosquitto as mosquitto  # the fixture

DEADLINE_S = 60.0
DEVICES = ("gw-shared-1", "gw-shared-2")
SEQS = range(1, 4)


def _signed(registrar: Registrar, device_id: str, now_s: int) -> list[bytes]:
    issued = registrar.issue(device_id, now_s - 60, meters=("M-1",), days=1)
    assert issued.device_key is not None
    out = []
    for seq in SEQS:
        group = batch_mod.MeterGroup("M-1", now_s, [
            batch_mod.Record("1-0:1.8.0", 3_600_000 * seq, "J")])
        batch = batch_mod.Batch(device_id, seq, now_s, True, [group])
        out.append(batch_mod.sign(batch, issued.device_key.sign, issued.certificate))
    return out


def _wait(condition: Callable[[], bool], what: str,
          shown: Callable[[], object] = lambda: None) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {shown()}"
        time.sleep(0.1)


def _status(entry: dict[str, Any], key: str) -> int:
    return int(str((local.node_status(entry) or {}).get(key, -1)))


@pytest.fixture
def cluster(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[dict[str, Any]]:
    described = local.create(tmp_path / "cluster", 4, mqtt_url=mosquitto.url)
    local.start(tmp_path / "cluster", described)
    try:
        local.wait_ready(described)
        yield described
    finally:
        local.stop(described)


def test_each_batch_is_committed_everywhere_and_receipted_once(
        cluster: dict[str, Any], mosquitto: Mosquitto) -> None:
    genesis = genesis_mod.load(Path(cluster["nodes"][0]["dir"]) / "genesis.json")
    node_keys = {v.node_id: v.public_key for v in genesis.validators}
    registrar = Registrar.open(Path(cluster["ca_dir"]))
    now_s = int(time.time())
    batches = {d: _signed(registrar, d, now_s) for d in DEVICES}
    receipts: list[bytes] = []
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with lock:
            receipts.append(message.payload)

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        client.subscribe("gl/v1/+/ack", qos=1)
        assert subscribed.wait(DEADLINE_S)
        for device_id, messages in batches.items():
            for message in messages:
                client.publish(f"gl/v1/{device_id}/up", message, qos=1).wait_for_publish(10)
        total = len(DEVICES) * len(SEQS)
        _wait(lambda: all(_status(e, "batches_committed") == total for e in cluster["nodes"]),
              "every batch committed on every node",
              lambda: [local.node_status(e) for e in cluster["nodes"]])
        # every node has committed them, so every receipt that will ever be sent is out
        # once the broker has passed on what it holds: one more block on every node
        heights = [_status(e, "height") for e in cluster["nodes"]]
        _wait(lambda: all(_status(e, "height") > h
                          for e, h in zip(cluster["nodes"], heights, strict=True)),
              "one more block everywhere")
    finally:
        client.loop_stop()
        client.disconnect()
    seen: Counter[tuple[str, int]] = Counter()
    for data in receipts:
        node_id, device_id, entries = receipt_mod.verify(data, node_keys, crypto.verify)
        assert node_id in node_keys
        seen.update((device_id, e.seq) for e in entries if e.status == receipt_mod.COMMITTED)
    assert seen == Counter({(d, s): 1 for d in DEVICES for s in SEQS})
