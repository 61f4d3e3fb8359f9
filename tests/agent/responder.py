"""A stand-in for the aggregator's receipt path, as DESIGN.md describes it.

MQTT: subscribes to `$share/gl-aggregators/gl/v1/+/up`, verifies each batch
(edge.portable.verify, with the certificate the device last presented in a kcwt, as the
ledger's registry keeps it) and publishes a receipt
signed with the node key on `gl/v1/{device}/ack`.  CoAP: POST /gl/v1/up answers 2.04
and GET /gl/v1/ack/{device} returns a receipt for the device's latest batches.  Every
arrival is a JSON line in --out (seq, SHA-256 of the message, meter statuses, via), so
a test can tell a duplicate (same bytes) from a reused seq (different bytes).

    python -m tests.agent.responder --node-key HEX --registrar HEX --out FILE \
        [--mqtt mqtt://127.0.0.1:PORT] [--coap-port PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import signal
import time
from typing import Any, TextIO

import aiomqtt

from edge import crypto
from edge.portable import cose, receipt, verify
from edge.portable.errors import GridLedgerError

NODE_ID = "node-0"
SHARED_UP = "$share/gl-aggregators/gl/v1/+/up"
RECENT = 64  # receipt entries per device over CoAP (receipt.MAX_ENTRIES)


class Responder:
    def __init__(self, node_key: crypto.SigningKey, registrar: bytes, out: TextIO) -> None:
        self.node_key = node_key
        self.registrar = registrar
        self.out = out
        self.height = 0
        self.recent: dict[str, list[int]] = {}
        self.certificates: dict[bytes, bytes] = {}  # kid -> last certificate presented

    def accept(self, data: bytes, via: str) -> tuple[str, list[receipt.Entry]] | None:
        """Verify a batch, record it; the device and receipt entries, None if invalid."""
        line: dict[str, Any] = {"via": via, "sha256": hashlib.sha256(data).hexdigest()}
        try:
            message = cose.parse(data)
            if message.kcwt is not None:
                self.certificates[message.kid] = message.kcwt
            checked = verify.verify_message(data, self.registrar, int(time.time()),
                                            crypto.verify, self.certificates.get(message.kid))
        except GridLedgerError as exc:
            line["error"] = exc.code
            self._write(line)
            return None
        batch = checked.batch
        self.height += 1
        line.update(device=batch.device_id, seq=batch.seq, bytes=len(data),
                    clock_synced=batch.clock_synced,
                    statuses={g.meter_id: g.status() for g in batch.meters})
        self._write(line)
        seqs = self.recent.setdefault(batch.device_id, [])
        if batch.seq not in seqs:
            seqs.append(batch.seq)
            del seqs[:-RECENT]
        return batch.device_id, [receipt.committed(batch.seq, self.height)]

    def _write(self, line: dict[str, Any]) -> None:
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()

    def receipt_for(self, device_id: str, entries: list[receipt.Entry]) -> bytes:
        return receipt.sign(NODE_ID, device_id, entries, self.node_key.sign)


async def serve_mqtt(responder: Responder, host: str, port: int) -> None:
    while True:
        try:
            async with aiomqtt.Client(host, port, identifier="gl-test-responder",
                                      protocol=aiomqtt.ProtocolVersion.V5, timeout=2) as client:
                await client.subscribe(SHARED_UP, qos=1)
                print("mqtt ready", flush=True)
                async for message in client.messages:
                    await _answer(responder, client, message)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.1)


async def _answer(responder: Responder, client: aiomqtt.Client,
                  message: aiomqtt.Message) -> None:
    if not isinstance(message.payload, bytes | bytearray):
        return
    got = responder.accept(bytes(message.payload), "mqtt")
    if got is not None:
        device_id, entries = got
        await client.publish(f"gl/v1/{device_id}/ack",
                             responder.receipt_for(device_id, entries), qos=1)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--node-key", required=True)
    parser.add_argument("--registrar", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--mqtt")
    parser.add_argument("--coap-port", type=int)
    args = parser.parse_args(argv)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with open(args.out, "a") as out:
        responder = Responder(crypto.SigningKey.from_bytes(bytes.fromhex(args.node_key)),
                              bytes.fromhex(args.registrar), out)
        tasks = []
        if args.mqtt:
            host, _, port = args.mqtt.removeprefix("mqtt://").rpartition(":")
            tasks.append(loop.create_task(serve_mqtt(responder, host, int(port))))
        if args.coap_port:
            from tests.agent.coap_responder import serve_coap
            tasks.append(loop.create_task(serve_coap(responder, args.coap_port)))
        await stop.wait()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


if __name__ == "__main__":
    asyncio.run(main())
