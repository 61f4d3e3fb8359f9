"""MQTT ingest: the embedded broker, a real Mosquitto with a shared subscription, and
reconnecting after the broker goes away."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

import aiomqtt

from aggregator.net.mqtt import EmbeddedBroker, MqttSettings
from aggregator.net.server import NodeServer
from edge import crypto
from edge.portable import receipt

from .conftest import (
    NODE_ID,
    NODE_KEY,
    Mosquitto,
    Pki,
    loopback_config,
    make_node,
    run,
    serving,
    wait_until,
)


@contextlib.asynccontextmanager
async def device_client(port: int, mqtt5: bool) -> AsyncIterator[aiomqtt.Client]:
    version = aiomqtt.ProtocolVersion.V5 if mqtt5 else aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client("127.0.0.1", port, protocol=version) as client:
        yield client


async def next_receipts(client: aiomqtt.Client, count: int) -> list[tuple[str, bytes]]:
    got = []
    async for message in client.messages:
        assert isinstance(message.payload, bytes)
        got.append((str(message.topic), message.payload))
        if len(got) == count:
            return got
    raise AssertionError("subscription ended")


def verify_receipt(data: bytes) -> tuple[str, list[receipt.Entry]]:
    _, device_id, entries = receipt.verify(data, {NODE_ID: NODE_KEY.public_key()}, crypto.verify)
    return device_id, entries


def mqtt_ready(server: NodeServer) -> bool:
    return server.mqtt is not None and server.mqtt.connected.is_set()


def test_embedded_broker_path_ingests_and_publishes_the_receipt(pki: Pki) -> None:
    device = pki.device("gw-mqtt-1")

    async def scenario() -> None:
        async with serving(make_node(pki), loopback_config()) as server:
            assert server.mqtt is not None and not server.mqtt.settings.mqtt5
            assert server.mqtt.settings.up_filter == "gl/v1/+/up"
            await wait_until(lambda: mqtt_ready(server), what="node subscribed")
            async with device_client(server.ports["mqtt"], mqtt5=False) as client:
                await client.subscribe("gl/v1/gw-mqtt-1/ack", qos=1)
                await client.publish("gl/v1/gw-mqtt-1/up", device.message(1), qos=1)
                [(topic, data)] = await next_receipts(client, 1)
            assert topic == "gl/v1/gw-mqtt-1/ack"
            assert verify_receipt(data) == ("gw-mqtt-1", [receipt.committed(1, 1)])

    run(scenario())


def test_amqtt_speaks_3_1_1_only_and_has_no_shared_subscriptions() -> None:
    """Why the embedded path uses MQTT 3.1.1 and a plain filter (docs/aggregator-net.md)."""

    async def scenario() -> None:
        broker = EmbeddedBroker()
        await broker.start()
        try:
            try:
                async with device_client(broker.port, mqtt5=True):
                    raise AssertionError("amqtt accepted an MQTT 5 CONNECT")
            except aiomqtt.MqttError as exc:
                assert "protocol" in str(exc).lower()
            async with device_client(broker.port, mqtt5=False) as client:
                await client.subscribe("$share/g/gl/v1/+/up", qos=1)
                await client.subscribe("gl/v1/+/probe", qos=1)
                await client.publish("gl/v1/x/up", b"to the shared filter", qos=1)
                await client.publish("gl/v1/x/probe", b"probe", qos=1)
                [(topic, _)] = await next_receipts(client, 1)
                assert topic == "gl/v1/x/probe"  # the $share filter matched nothing
        finally:
            await broker.shutdown()

    run(scenario())
    gc.collect()  # a stream amqtt left open on the refused CONNECT would warn here, in this test


def test_shared_subscription_on_mosquitto_splits_the_load(pki: Pki, mosquitto: Mosquitto) -> None:
    devices = [pki.device(f"gw-share-{i}") for i in range(4)]
    messages = [d.message(seq) for seq in range(1, 6) for d in devices]

    async def scenario() -> None:
        node_a, node_b = make_node(pki), make_node(pki)
        config_a = loopback_config(mqtt_url=mosquitto.url, node_id="node-a", seed=1)
        config_b = loopback_config(mqtt_url=mosquitto.url, node_id="node-b", seed=2)
        async with serving(node_a, config_a) as a, serving(node_b, config_b) as b:
            assert a.mqtt is not None and a.mqtt.settings.mqtt5
            assert a.mqtt.settings.up_filter == "$share/gl-aggregators/gl/v1/+/up"
            await wait_until(lambda: mqtt_ready(a) and mqtt_ready(b), what="both subscribed")
            async with device_client(mosquitto.port, mqtt5=True) as client:
                await client.subscribe("gl/v1/+/ack", qos=1)
                for message, device in zip(messages, devices * 5, strict=True):
                    await client.publish(f"gl/v1/{device.device_id}/up", message, qos=1)
                await wait_until(
                    lambda: len(node_a.submitted) + len(node_b.submitted) == len(messages),
                    what="all submitted")
                await wait_until(
                    lambda: node_a.batches_committed + node_b.batches_committed == len(messages),
                    what="all committed")
                acked: list[tuple[str, int]] = []
                while len(acked) < len(messages):
                    [(_, data)] = await next_receipts(client, 1)
                    device_id, entries = verify_receipt(data)
                    acked.extend((device_id, e.seq) for e in entries)
            assert sorted(node_a.submitted + node_b.submitted) == sorted(messages)
            assert node_a.submitted and node_b.submitted, "one subscriber got everything"
            assert sorted(acked) == sorted((d.device_id, s) for s in range(1, 6) for d in devices)

    run(scenario())


def test_reconnects_after_the_broker_restarts_and_publishes_held_receipts(
    pki: Pki, mosquitto: Mosquitto
) -> None:
    device = pki.device("gw-restart")

    async def scenario() -> None:
        node = make_node(pki, block_interval_s=None)
        async with serving(node, loopback_config(mqtt_url=mosquitto.url)) as server:
            assert server.mqtt is not None
            await wait_until(lambda: mqtt_ready(server), what="node subscribed")
            async with device_client(mosquitto.port, mqtt5=True) as client:
                await client.publish("gl/v1/gw-restart/up", device.message(1), qos=1)
            await wait_until(lambda: len(node.submitted) == 1, what="batch accepted")
            await asyncio.to_thread(mosquitto.stop)
            await wait_until(lambda: not mqtt_ready(server), what="disconnect noticed")
            await node.commit()  # the receipt must wait for the broker, not vanish
            await wait_until(lambda: server.hub.received == 1, what="receipt in the hub")
            await asyncio.to_thread(mosquitto.start)
            await wait_until(lambda: mqtt_ready(server), 15, what="reconnected")
            assert server.mqtt.connections == 2
            await wait_until(lambda: receipts_out(server) == 1, what="held receipt published")
            async with device_client(mosquitto.port, mqtt5=True) as client:
                await client.subscribe("gl/v1/gw-restart/ack", qos=1)
                await client.publish("gl/v1/gw-restart/up", device.message(2), qos=1)
                await wait_until(lambda: len(node.submitted) == 2, what="second batch")
                await node.commit()
                [(_, data)] = await next_receipts(client, 1)
            assert verify_receipt(data) == ("gw-restart", [receipt.committed(2, 2)])

    run(scenario(), timeout_s=45)


def receipts_out(server: NodeServer) -> float:
    value = server.metrics.registry.get_sample_value(
        "gl_net_receipts_out_total", {"transport": "mqtt"})
    return value or 0.0


def test_settings_pick_the_filter_by_protocol() -> None:
    shared = MqttSettings("h", 1, "c", mqtt5=True)
    assert shared.up_filter == "$share/gl-aggregators/gl/v1/+/up"
    assert MqttSettings("h", 1, "c", mqtt5=False).up_filter == "gl/v1/+/up"
    assert MqttSettings("h", 1, "c", mqtt5=True, shared_group=None).up_filter == "gl/v1/+/up"


def test_overloaded_node_holds_mqtt_messages_and_retries_until_admitted(pki: Pki) -> None:
    device = pki.device("gw-hold")
    messages = [device.message(seq) for seq in (1, 2, 3)]

    async def scenario() -> None:
        node = make_node(pki, block_interval_s=None, mempool_max=1, retry_after_s=1)
        async with serving(node, loopback_config()) as server:
            await wait_until(lambda: mqtt_ready(server), what="node subscribed")
            async with device_client(server.ports["mqtt"], mqtt5=False) as client:
                for message in messages:
                    await client.publish("gl/v1/gw-hold/up", message, qos=1)
            registry = server.metrics.registry

            def overloaded() -> float:
                return registry.get_sample_value(
                    "gl_net_admissions_total", {"transport": "mqtt", "outcome": "overloaded"}
                ) or 0.0

            await wait_until(lambda: overloaded() >= 2, what="two held by overload")
            for count in (1, 2, 3):
                await wait_until(lambda c=count: len(node.submitted) == c,  # type: ignore[misc]
                                 10, what=f"{count} admitted")
                await node.commit()
            assert sorted(node.submitted) == sorted(messages)
            assert registry.get_sample_value(
                "gl_net_messages_in_total", {"transport": "mqtt"}) == 3

    run(scenario())


def test_acknowledges_after_the_node_answers_so_more_than_receive_maximum_flow(
    pki: Pki, mosquitto: Mosquitto
) -> None:
    """The node sets Receive Maximum = INFLIGHT_MAX and PUBACKs by hand: if it forgot to
    acknowledge, Mosquitto would stop after INFLIGHT_MAX messages."""
    from aggregator.net.mqtt import INFLIGHT_MAX

    device = pki.device("gw-flow")
    messages = [device.message(seq) for seq in range(INFLIGHT_MAX + 44)]

    async def scenario() -> None:
        node = make_node(pki, block_interval_s=None, mempool_max=len(messages))
        async with serving(node, loopback_config(mqtt_url=mosquitto.url)) as server:
            await wait_until(lambda: mqtt_ready(server), what="node subscribed")
            async with device_client(mosquitto.port, mqtt5=True) as client:
                for message in messages:
                    await client.publish("gl/v1/gw-flow/up", message, qos=1)
            await wait_until(lambda: len(node.submitted) == len(messages), 20,
                             what=f"all {len(messages)} admitted")

    run(scenario())
