"""The shell around the real ledger: a solo node directory, CoAP in, signed receipts out."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiocoap
import pytest

from aggregator import node as node_mod
from aggregator.net.engine_node import EngineNode
from aggregator.net.server import NodeServer
from edge import crypto
from edge.portable import cbor, receipt

from .conftest import Pki, coap_client, coap_post, loopback_config, run


@contextlib.asynccontextmanager
async def ledger_node(
    pki: Pki, data_dir: Path, pooled: bool
) -> AsyncIterator[tuple[NodeServer, dict[str, bytes]]]:
    node_mod.init(data_dir, pki.registrar.directory, "gl-net-test", int(time.time()) - 10)
    opened = node_mod.open_node(data_dir)
    keys = {v.node_id: v.public_key for v in opened.genesis.validators}
    if pooled:
        node = EngineNode.with_pool(opened.engine, opened.genesis.registrar_public_key)
    else:
        node = EngineNode(opened.engine)
    await node.start()
    server = NodeServer(node, loopback_config(node_id=opened.node_id))
    try:
        await server.start()
        yield server, keys
    finally:
        await server.shutdown()
        await node.shutdown()
        opened.store.close()


@pytest.mark.parametrize("pooled", [False, True], ids=["inline", "precheck-pool"])
def test_batch_over_coap_is_committed_and_receipted_by_the_ledger(
    pki: Pki, tmp_path: Path, pooled: bool
) -> None:
    device = pki.device("gw-ledger")
    good = device.message(1)
    tampered = good[:-3] + bytes([good[-3] ^ 0x10]) + good[-2:]

    async def scenario() -> None:
        async with ledger_node(pki, tmp_path / "node", pooled) as (server, keys), \
                coap_client() as cl:
            port = server.ports["coap"]
            uri = f"coap://127.0.0.1:{port}/gl/v1/ack/gw-ledger"
            watch = cl.request(aiocoap.Message(code=aiocoap.GET, uri=uri, observe=0))
            assert (await watch.response).code == aiocoap.CONTENT
            updates = aiter(watch.observation)
            accepted = await coap_post(cl, port, good)
            assert accepted.code == aiocoap.CHANGED, accepted.payload
            assert cbor.decode(accepted.payload) == {1: "gw-ledger", 2: 1, 3: "accepted"}
            rejected = await coap_post(cl, port, tampered)
            assert rejected.code.dotted == "4.01", rejected.payload
            assert rejected.payload.startswith(b"cose.signature")
            notification = await asyncio.wait_for(anext(updates), 10)
            _, device_id, entries = receipt.verify(notification.payload, keys, crypto.verify)
            assert device_id == "gw-ledger"
            assert [(e.seq, e.committed) for e in entries] == [(1, True)]
            watch.observation.cancel()
            status = server.node.status()
            assert status["height"] == 1 and status["batches_committed"] == 1
            again = await coap_post(cl, port, good)  # a device that lost its receipt
            assert again.code == aiocoap.CHANGED, again.payload
            if pooled:  # both goods were prechecked; the tampered one does not verify
                assert isinstance(server.node, EngineNode) and server.node.prechecked == 2

    run(scenario())


def test_pooled_prechecks_admit_in_arrival_order(pki: Pki, tmp_path: Path) -> None:
    """Prechecks finish in any order; a device's seqs must still reach check_tx in order,
    or an earlier seq would be refused as a replay once a later one is committed."""
    device = pki.device("gw-order")
    messages = [device.message(seq) for seq in range(1, 21)]

    class ReversePool:
        """Finishes the prechecks in the reverse of their arrival order."""

        async def start(self) -> None: ...

        async def shutdown(self) -> None: ...

        async def run(self, message: bytes) -> None:
            await asyncio.sleep(0.002 * (len(messages) - messages.index(message)))

    async def scenario() -> tuple[list[int], list[str]]:
        data_dir = tmp_path / "node"
        node_mod.init(data_dir, pki.registrar.directory, "gl-order", int(time.time()) - 10)
        opened = node_mod.open_node(data_dir)
        seen: list[int] = []
        submit_message = opened.engine.submit_message

        def recording(message: bytes, now_s: float, prechecked: object = None) -> object:
            seen.append(messages.index(message) + 1)
            return submit_message(message, now_s, prechecked)  # type: ignore[arg-type]

        opened.engine.submit_message = recording  # type: ignore[assignment,method-assign]
        node = EngineNode(opened.engine, precheck_pool=ReversePool())  # type: ignore[arg-type]
        await node.start()
        try:
            answers = await asyncio.gather(*(node.submit(m, "mqtt") for m in messages))
        finally:
            await node.shutdown()
            opened.store.close()
        return seen, [a.outcome for a in answers]

    seen, outcomes = run(scenario())
    assert seen == list(range(1, 21))
    assert outcomes == ["accepted"] * len(messages)
