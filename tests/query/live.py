"""A real node with the query API on loopback ports, running in a thread of its own.

`LiveNode` initialises a solo node directory, opens its ledger, and serves CoAP, MQTT and
HTTP (with `aggregator.query.api` mounted) from an event loop in a background thread, so
plain synchronous tests and schemathesis can talk HTTP to it.  Batches go in through the
node's own `submit` (what CoAP and MQTT call); `wait_committed` waits on a condition with
a deadline.  The fixture world: two residents' meters, a gateway each, one gateway that
reads both, a supplier of the first gateway, an auditor and an operator.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator import node as node_mod
from aggregator import rules
from aggregator import tx as tx_mod
from aggregator.net.engine_node import EngineNode
from aggregator.net.server import NetConfig, NodeServer
from aggregator.query.api import QueryApi, QueryConfig
from aggregator.query.confidential import CustomerFields
from aggregator.query.ratelimit import Limit, TokenRequestLimiter
from certs.registrar import Registrar
from edge import crypto
from edge.portable import batch as batch_mod
from tests.query.conftest import CHEAP_SCRYPT, SEED

CHAIN_ID = "gl-query-test"
DEADLINE_S = 20.0
PASSWORD = "correct horse battery"
M_ALICE, M_BOB = "M-A1", "M-B1"
ACCOUNTS = {  # username -> (role, meters, devices)
    "alice": ("resident", (M_ALICE,), ()),
    "bob": ("resident", (M_BOB,), ()),
    "sup": ("supplier", (), ("gw-a",)),
    "audit": ("auditor", (), ()),
    "op": ("operator", (), ()),
}


@dataclass
class Gateway:
    device_id: str
    key: crypto.SigningKey
    certificate: bytes
    meters: tuple[str, ...]

    def message(self, seq: int, energy_j: int = 1_000_000, now_s: int | None = None,
                kcwt: bool = True) -> bytes:
        now_s = int(time.time()) if now_s is None else now_s
        groups = [batch_mod.MeterGroup(meter, now_s - 1, [
            batch_mod.Record("1-0:1.8.0", energy_j + seq * 1000 + i, "J"),
            batch_mod.Record("1-0:1.7.0", 512.5, "W")]) for i, meter in enumerate(self.meters)]
        item = batch_mod.Batch(self.device_id, seq, now_s, True, groups)
        return batch_mod.sign(item, self.key.sign, self.certificate if kcwt else None)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class LiveNode:
    root: Path
    registrar: Registrar = field(init=False)
    gateways: dict[str, Gateway] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    port: int = 0

    def __post_init__(self) -> None:
        self.registrar = Registrar.init(self.root / "ca")
        self.data_dir = self.root / "node"
        self.key_file = self.root / "keys" / "customer.keys"
        self.key_file.parent.mkdir()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="live-node", daemon=True)

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> LiveNode:
        now_s = int(time.time())
        node_mod.init(self.data_dir, self.registrar.directory, CHAIN_ID, now_s - 100)
        self.genesis_path = self.data_dir / node_mod.GENESIS_FILE
        for device_id, meters in (("gw-a", (M_ALICE,)), ("gw-b", (M_BOB,)),
                                  ("gw-mix", (M_ALICE, M_BOB))):
            self.gateway(device_id, meters)
        self._thread.start()
        if not self._ready.wait(DEADLINE_S) or self._failure is not None:
            raise AssertionError(f"node did not start: {self._failure!r}")
        return self

    def gateway(self, device_id: str, meters: tuple[str, ...]) -> Gateway:
        issued = self.registrar.issue(device_id, int(time.time()) - 60, meters=meters)
        assert issued.device_key is not None
        self.gateways[device_id] = Gateway(device_id, issued.device_key, issued.certificate,
                                           meters)
        return self.gateways[device_id]

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start() or stop()
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        opened = node_mod.open_node(self.data_dir)
        node = EngineNode(opened.engine)
        key = crypto.read_private_key(self.data_dir / node_mod.KEY_FILE)
        rng = random.Random(SEED)
        # One test process logs in from one address many times: widen that bucket only;
        # the per-username and node buckets keep their production values.
        limiter = TokenRequestLimiter(per_address=Limit(burst=10_000, rate_per_s=100.0))
        config = QueryConfig(self.data_dir, self.data_dir / node_mod.LEDGER_FILE,
                             self.key_file, CHEAP_SCRYPT, random_bytes=rng.randbytes,
                             limiter=limiter, queries=None)  # test_api swaps one in
        self.api = QueryApi(opened.genesis, opened.node_id, key, config, node.submit_registry)
        self.node, self.opened = node, opened
        for username, (role, meters, devices) in ACCOUNTS.items():
            self.api.accounts.add(username, role, PASSWORD, int(time.time()), meters, devices)
        assert self.api.customers is not None
        self.api.customers.put(M_ALICE, CustomerFields("Alice A.", "1 Main St", "C-17"))
        net = NetConfig(node_id=opened.node_id, coap_port=0, http_port=0,
                        embedded_mqtt_port=0, seed=SEED)
        server = NodeServer(node, net, self.api.mount)
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await node.start()
        try:
            await server.start()
            self.port = server.ports["http"]
            self._ready.set()
            await self._stop.wait()
        finally:
            await server.shutdown()
            await node.shutdown()
            self.api.close()
            opened.store.close()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(DEADLINE_S)
        assert not self._thread.is_alive(), "node did not stop"

    # -- driving it -----------------------------------------------------------------------

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        assert self._loop is not None

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(DEADLINE_S)

    def submit(self, message: bytes) -> Any:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self.node.submit(message, "coap"), self._loop)
        return future.result(DEADLINE_S)

    def committed(self) -> int:
        return int(self.on_loop(lambda: self.node.status()["batches_committed"]))

    def wait_committed(self, batches: int) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while self.committed() < batches:
            if time.monotonic() > deadline:
                raise AssertionError(f"{batches} batches not committed in {DEADLINE_S} s")
            time.sleep(0.02)

    def wait_document(self, digest: str, user: str = "audit") -> Any:
        """The on-chain record of a document, once a block committed it."""
        deadline = time.monotonic() + DEADLINE_S
        while (answer := self.http("GET", f"/v1/documents/{digest}/record",
                                   user=user)).status == 404:
            if time.monotonic() > deadline:
                raise AssertionError(f"record of {digest} not committed in {DEADLINE_S} s")
            time.sleep(0.02)
        assert answer.status == 200, answer.body
        return answer.json()

    def enrollment(self, gateway: Gateway) -> bytes:
        return tx_mod.make_enrollment(gateway.certificate, {}, int(time.time()) - 5,
                                      self.registrar.public_key, self.registrar.key.sign)

    def revocation(self, device_id: str) -> bytes:
        return tx_mod.make_revocation(device_id, int(time.time()) - 5, "test",
                                      self.registrar.public_key, self.registrar.key.sign)

    # -- HTTP ---------------------------------------------------------------------------

    def http(self, method: str, path: str, token: str | None = None, body: bytes | None = None,
             content_type: str = "application/json", user: str | None = None) -> Answer:
        if user is not None:
            token = self.token(user)
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body,
                                         method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        if body is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=DEADLINE_S) as answer:
                return Answer(answer.status, dict(answer.headers), answer.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return Answer(exc.code, dict(exc.headers), exc.read())

    def login(self, username: str, password: str = PASSWORD) -> Answer:
        body = json.dumps({"username": username, "password": password}).encode()
        return self.http("POST", "/v1/auth/token", body=body)

    def token(self, username: str) -> str:
        if username not in self.tokens:
            answer = self.login(username)
            assert answer.status == 200, answer.body
            self.tokens[username] = str(answer.json()["access_token"])
        return self.tokens[username]


GW_A_LAST = 3 + rules.SEQ_WINDOW + 2


def populate(live: LiveNode) -> None:
    """The fixture world's batches: gw-a 1..3 and GW_A_LAST (seq 4 falls out of the
    window unsent: a gap), gw-b 1..2, gw-mix 1."""
    messages = [live.gateways["gw-a"].message(seq) for seq in (1, 2, 3)]
    messages += [live.gateways["gw-b"].message(seq) for seq in (1, 2)]
    messages += [live.gateways["gw-mix"].message(1), live.gateways["gw-a"].message(GW_A_LAST)]
    for message in messages:
        admission = live.submit(message)
        assert admission.outcome == "accepted", admission
    live.wait_committed(len(messages))
