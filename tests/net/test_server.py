"""The node server as a process (SIGTERM), its pieces in isolation, and the port mapping."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest

from aggregator.net import ports
from aggregator.net.ports import Admission, CommitReceipt, ThreadedNode, coap_code_for
from aggregator.net.server import ConfigError, JsonFormatter, parse_mqtt_url
from aggregator.net.verifier import BatchingVerifier, InlineVerifier

from .conftest import Pki, run, wait_until


@pytest.mark.parametrize(("code", "coap"), [
    ("cbor.truncated", "4.00"), ("cose.structure", "4.00"), ("batch.seq", "4.00"),
    ("cose.tag", "4.00"), ("cose.signature", "4.01"), ("cert.signature", "4.01"),
    ("cert.expired", "4.01"), ("cert.missing", "4.01"), ("cose.kid", "4.01"),
    ("cert.revoked", "4.03"), ("cert.meter", "4.03"), ("rule.replay", "4.09"),
    ("mempool.duplicate", "4.09"), ("net.too_large", "4.13"), ("tx.limit", "4.13"),
    ("net.content_format", "4.15"), ("mempool.full", "5.03"), ("net.node", "5.00"),
    ("something.new", "4.00"),
])
def test_coap_code_for_each_error_code(code: str, coap: str) -> None:
    assert coap_code_for(code) == coap


def test_diagnostic_is_short_utf8_with_the_code_first() -> None:
    text = ports.diagnostic("cose.signature", "é" * 200)
    assert len(text) <= ports.DIAGNOSTIC_BYTES_MAX
    assert text.decode().startswith("cose.signature ")


def test_overload_retry_is_clamped() -> None:
    assert Admission.overloaded(0).retry_after_s == ports.RETRY_AFTER_S_MIN
    assert Admission.overloaded(10_000).retry_after_s == ports.RETRY_AFTER_S_MAX


def test_mqtt_url_parsing() -> None:
    assert parse_mqtt_url("mqtt://broker.example:1884") == ("broker.example", 1884)
    assert parse_mqtt_url("mqtt://127.0.0.1") == ("127.0.0.1", 1883)
    for bad in ("http://x", "mqtt://", "mqtt://x:notaport"):
        with pytest.raises(ConfigError):
            parse_mqtt_url(bad)


def test_json_log_lines_carry_fields() -> None:
    record = logging.LogRecord("gridledger.net", logging.INFO, __file__, 1, "coap.listening",
                               None, None)
    record.fields = {"port": 5683}
    line = json.loads(JsonFormatter().format(record))
    assert (line["event"], line["port"], line["level"]) == ("coap.listening", 5683, "info")


def test_threaded_node_runs_a_sync_check_off_the_loop(pki: Pki) -> None:
    import threading

    seen: list[str] = []

    def check(message: bytes, transport: str) -> Admission:
        seen.append(threading.current_thread().name)
        return Admission.accepted("gw-x", len(message))

    async def no_receipts():  # type: ignore[no-untyped-def]
        if False:
            yield CommitReceipt("", b"")

    node = ThreadedNode(check, no_receipts, lambda: {"ok": True})

    async def scenario() -> Admission:
        return await node.submit(b"abc", "coap")

    assert run(scenario()) == Admission.accepted("gw-x", 3)
    assert seen and seen[0] != threading.main_thread().name
    assert node.status() == {"ok": True}


def test_batching_verifier_matches_the_inline_verdicts(pki: Pki) -> None:
    device = pki.device("gw-pool")
    good = [device.message(seq) for seq in range(40)]
    bad = [m[:-1] + bytes([m[-1] ^ 1]) for m in good[:10]] + [b"", b"\xa0", b"\xd2\x80"]
    messages = good + bad + [pki.device("gw-revoked").message(1)]

    async def scenario() -> tuple[list[str], list[str], int]:
        pool = BatchingVerifier(pki.public_key, revoked=lambda: pki.revoked, batch_max=16)
        inline = InlineVerifier(pki.public_key, revoked=lambda: pki.revoked)
        await pool.start()
        try:
            pooled = await asyncio.gather(*(pool.verify(m) for m in messages))
        finally:
            await pool.shutdown()
        direct = [await inline.verify(m) for m in messages]
        return [r.code for r in pooled], [r.code for r in direct], pool.windows

    pooled, direct, windows = run(scenario())
    assert pooled == direct
    assert pooled[:40] == [""] * 40
    assert pooled[40:50] == ["cose.signature"] * 10
    assert pooled[-1] == "cert.revoked"
    assert windows >= len(messages) // 16


def test_sigterm_stops_the_server_process_cleanly(pki: Pki) -> None:
    command = [
        sys.executable, "-m", "aggregator.net.server", "--registrar", str(pki.registrar.directory),
        "--coap", "127.0.0.1:0", "--http", "127.0.0.1:0", "--embedded-mqtt", "127.0.0.1:0",
    ]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                          cwd=Path(__file__).resolve().parents[2]) as process:
        try:
            assert process.stderr is not None
            ready = _ready_event(process.stderr)
            assert ready is not None, "no node.ready line"
            assert ready["coap"] > 0 and ready["http"] > 0 and ready["mqtt"] > 0
            process.send_signal(signal.SIGTERM)
            rest = process.stderr.read()
            assert process.wait(timeout=20) == 0, rest
            events = [json.loads(line)["event"] for line in rest.splitlines() if line.strip()]
            assert "node.stopped" in events, rest
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _ready_event(stream: IO[str], timeout_s: float = 20) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            return None
        event = json.loads(line)
        if event.get("event") == "node.ready":
            return dict(event)
    return None


def test_full_coap_ingress_answers_busy_without_calling_the_node() -> None:
    from aggregator.net.ingress import Ingress
    from aggregator.net.metrics import NetMetrics

    class SlowNode:
        def __init__(self) -> None:
            self.release = asyncio.Event()
            self.calls = 0

        async def submit(self, message: bytes, transport: str) -> Admission:
            self.calls += 1
            await self.release.wait()
            return Admission.accepted("gw-x", 1)

        def receipts(self):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def status(self) -> dict[str, object]:
            return {}

    async def scenario() -> None:
        node = SlowNode()
        ingress = Ingress(node, NetMetrics(), {"coap": 1})
        first = asyncio.ensure_future(ingress.submit(b"a", "coap", False))
        await wait_until(lambda: node.calls == 1, what="first message at the node")
        busy = await ingress.submit(b"b", "coap", False)
        assert (busy.outcome, busy.code, busy.retry_after_s) == ("overloaded", "net.busy", 1)
        assert ingress.inflight("coap") == 1 and node.calls == 1
        node.release.set()
        assert (await first).outcome == "accepted"
        assert ingress.inflight("coap") == 0

    run(scenario())


def test_batching_verifier_replaces_a_pool_whose_workers_died(pki: Pki) -> None:
    import os

    message = pki.device("gw-pool-kill").message(1)

    async def scenario() -> list[str]:
        pool = BatchingVerifier(pki.public_key)
        await pool.start()
        codes: list[str] = []
        try:
            assert pool._pool is not None
            for worker in list(pool._pool._processes.values()):
                assert worker.pid is not None
                # Killing one breaks the pool, whose manager may end the other first.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
                worker.join(10)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                codes.append((await pool.verify(message)).code)
                if codes[-1] == "":
                    break
        finally:
            await pool.shutdown()
        return codes

    codes = run(scenario())
    assert codes[0] == "net.node" and codes[-1] == "", codes
    assert set(codes[:-1]) == {"net.node"}, codes


def test_receipts_keep_flowing_after_the_node_iterator_fails(pki: Pki) -> None:
    from aggregator.net.server import NodeServer

    from .conftest import loopback_config

    class FlakyNode:
        def __init__(self) -> None:
            self.asked = 0

        async def submit(self, message: bytes, transport: str) -> Admission:
            return Admission.rejected("cbor.invalid")

        async def receipts(self):  # type: ignore[no-untyped-def]
            self.asked += 1
            if self.asked == 1:
                raise RuntimeError("the node's receipt stream broke")
            yield CommitReceipt("gw-flaky", b"receipt")

        def status(self) -> dict[str, object]:
            return {}

    async def scenario() -> None:
        server = NodeServer(FlakyNode(), loopback_config())
        await server.start()
        try:
            await wait_until(lambda: server.hub.latest("gw-flaky") == b"receipt", 10,
                             what="receipt after the iterator was asked again")
        finally:
            await server.shutdown()

    run(scenario())
