"""Four validator processes on loopback: load over CoAP and MQTT through two of them,
kill -9 one node and then the proposer, restart them, cut one off through a proxy and
heal it.  Commits go on throughout; every node ends with the same blocks, and serves
the same hash for every height at GET /v1/blocks/{height} (an auditor account on each
node, a token from each); no receipted batch is lost or committed twice.

Every wait has a deadline; a failure names the phase and the cluster directory (each
node's log is DIR/node-i/node.log).  The test seed (GL_SEED) picks device ids and which
node is killed first; it is printed on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiocoap
import aiomqtt
import pytest

from aggregator.cluster import local, wire
from aggregator.cluster.links import read_frame
from aggregator.consensus.engine import ConsensusMsg
from aggregator.consensus.messages import PREVOTE, encode_message, sign_vote
from aggregator.consensus.validators import ValidatorSet
from aggregator.query.accounts import AccountStore
from aggregator.store import Store
from certs.registrar import Registrar
from edge import crypto
from edge.portable import batch as batch_mod
from edge.portable import receipt as receipt_mod
from gridledger import genesis as genesis_mod
from tests.cluster.proxy import FaultProxy
from tests.query.conftest import CHEAP_SCRYPT

SEED = int(os.environ.get("GL_SEED", random.SystemRandom().randrange(1 << 30)))
PHASE_S = 40.0          # deadline of each phase's condition
RESEND_S = 3.0          # a device re-sends its batch when no receipt came in this time
DEVICES_PER_TRANSPORT = 3
METER = "M-1"
AUDITOR, PASSWORD = "auditor", "cluster auditor password"


class Device:
    def __init__(self, device_id: str, registrar: Registrar) -> None:
        issued = registrar.issue(device_id, int(time.time()) - 60, meters=(METER,), days=1)
        assert issued.device_key is not None
        self.device_id = device_id
        self.key = issued.device_key
        self.certificate: bytes | None = issued.certificate
        self.seq = 1
        self.stored: dict[int, bytes] = {}     # the exact bytes sent for each seq
        self.receipted: dict[int, int] = {}    # seq -> height of its commit receipt
        self.got = asyncio.Event()

    def message(self) -> bytes:
        if self.seq not in self.stored:
            now_s = int(time.time())
            group = batch_mod.MeterGroup(METER, now_s, [
                batch_mod.Record("1-0:1.8.0", 3_600_000 + self.seq, "J")])
            batch = batch_mod.Batch(self.device_id, self.seq, now_s, True, [group])
            self.stored[self.seq] = batch_mod.sign(batch, self.key.sign, self.certificate)
        return self.stored[self.seq]

    def take(self, receipt: bytes, node_keys: dict[str, bytes]) -> None:
        try:
            _, device_id, entries = receipt_mod.verify(receipt, node_keys, crypto.verify)
        except Exception:  # a bad receipt is simply not a receipt
            return
        if device_id != self.device_id:
            return
        for entry in entries:
            if entry.committed:
                self.receipted.setdefault(entry.seq, entry.height)
        if self.seq in self.receipted:
            self.seq += 1
            self.certificate = None  # registered with the first commit
            self.got.set()


class Load:
    """CoAP devices at one node, MQTT devices at another; each sends its next batch once
    the previous one is receipted, and re-sends the same bytes after RESEND_S."""

    def __init__(self, cluster: dict[str, Any], registrar: Registrar, rng: random.Random,
                 node_keys: dict[str, bytes]) -> None:
        self.coap_node, self.mqtt_node = cluster["nodes"][0], cluster["nodes"][1]
        tag = rng.randrange(1 << 20)
        self.coap = [Device(f"gw-c{tag}-{i}", registrar) for i in range(DEVICES_PER_TRANSPORT)]
        self.mqtt = [Device(f"gw-m{tag}-{i}", registrar) for i in range(DEVICES_PER_TRANSPORT)]
        self.node_keys = node_keys
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def devices(self) -> list[Device]:
        return self.coap + self.mqtt

    def receipted(self) -> int:
        return sum(len(d.receipted) for d in self.devices)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._coap_device(d)) for d in self.coap]
        self._tasks.append(loop.create_task(self._mqtt()))

    async def stop(self) -> None:
        self.stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _coap_device(self, device: Device) -> None:
        context = await aiocoap.Context.create_client_context()
        uri = f"coap://{self.coap_node['coap']}"
        try:
            while not self.stopping.is_set():
                post = aiocoap.Message(code=aiocoap.POST, payload=device.message(),
                                       uri=f"{uri}/gl/v1/up", content_format=18)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(context.request(post).response, RESEND_S)
                seq = device.seq
                deadline = time.monotonic() + RESEND_S
                while device.seq == seq and time.monotonic() < deadline:
                    get = aiocoap.Message(code=aiocoap.GET,
                                          uri=f"{uri}/gl/v1/ack/{device.device_id}")
                    with contextlib.suppress(Exception):
                        answer = await asyncio.wait_for(context.request(get).response, 1.0)
                        if answer.code.is_successful():
                            device.take(bytes(answer.payload), self.node_keys)
                    if device.seq == seq:
                        await asyncio.sleep(0.2)
        finally:
            await context.shutdown()

    async def _mqtt(self) -> None:
        host, port = self.mqtt_node["mqtt"].split(":")
        by_id = {d.device_id: d for d in self.mqtt}
        while not self.stopping.is_set():
            try:
                async with aiomqtt.Client(host, int(port),
                                          protocol=aiomqtt.ProtocolVersion.V311) as client:
                    await client.subscribe("gl/v1/+/ack", qos=1)
                    senders = [asyncio.get_running_loop().create_task(
                        self._mqtt_device(client, d)) for d in self.mqtt]
                    try:
                        async for message in client.messages:
                            device = by_id.get(str(message.topic).split("/")[2])
                            if device is not None and isinstance(message.payload, bytes):
                                device.take(message.payload, self.node_keys)
                    finally:
                        for task in senders:
                            task.cancel()
                        await asyncio.gather(*senders, return_exceptions=True)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.5)  # the node is down: try again

    async def _mqtt_device(self, client: aiomqtt.Client, device: Device) -> None:
        while True:
            device.got.clear()
            await client.publish(f"gl/v1/{device.device_id}/up", device.message(), qos=1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(device.got.wait(), RESEND_S)


class Cluster:
    def __init__(self, directory: Path, cluster: dict[str, Any]) -> None:
        self.directory = directory
        self.c = cluster
        self.nodes = cluster["nodes"]
        genesis = genesis_mod.load(Path(self.nodes[0]["dir"]) / "genesis.json")
        self.validators = ValidatorSet.of((v.node_id, v.public_key, v.power)
                                          for v in genesis.validators)
        self.node_keys = genesis.node_keys()
        self.status: dict[str, dict[str, Any] | None] = {}

    def index(self, node_id: str) -> int:
        return [n["node_id"] for n in self.nodes].index(node_id)

    async def poll(self) -> None:
        found = await asyncio.gather(*(asyncio.to_thread(local.node_status, n, 1.0)
                                       for n in self.nodes))
        self.status = {n["node_id"]: s for n, s in zip(self.nodes, found, strict=True)}

    def height(self, node_id: str) -> int:
        found = self.status.get(node_id)
        return int(found["height"]) if found else -1

    def readings(self, node_id: str) -> int:
        found = self.status.get(node_id)
        return int(found["readings_committed"]) if found else -1

    async def advance(self, node_ids: list[str], what: str, readings: int = 3) -> None:
        """The given nodes commit readings beyond where they are now."""
        await self.poll()
        start = {n: self.readings(n) for n in node_ids}

        async def moved() -> bool:
            await self.poll()
            return all(self.readings(n) >= start[n] + readings for n in node_ids)

        await _await_true(moved, what)

    async def kill(self, index: int) -> None:
        entry = self.nodes[index]
        os.kill(entry["pid"], signal.SIGKILL)
        await asyncio.to_thread(local.wait_until, lambda: not local.alive(entry["pid"]), 10,
                                f"{entry['node_id']} to die")

    async def restart(self, index: int) -> None:
        local.start_node(self.nodes[index])
        local.save(self.directory, self.c)
        entry = self.nodes[index]

        async def serving() -> bool:
            return await asyncio.to_thread(local.node_status, entry, 1.0) is not None

        await _await_true(serving, f"{entry['node_id']} to serve again")

    async def caught_up(self, index: int, what: str) -> None:
        """The node reaches the height the others had when it came back, and then keeps
        within one block of them."""
        node_id = self.nodes[index]["node_id"]
        await self.poll()
        target = max(self.height(n["node_id"]) for n in self.nodes if n["node_id"] != node_id)

        async def level() -> bool:
            await self.poll()
            others = [self.height(n["node_id"]) for n in self.nodes if n["node_id"] != node_id]
            return self.height(node_id) >= max(target, max(others) - 1) > 0

        await _await_true(level, what)


async def _await_true(check: Callable[[], Any], what: str, timeout_s: float = PHASE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s: {what} (GL_SEED={SEED})")
        await asyncio.sleep(0.3)


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Any:
    directory = tmp_path / "cluster"
    yield directory
    if (directory / local.CLUSTER_FILE).exists():
        for entry in local.load(directory)["nodes"]:
            if local.alive(entry.get("pid")):
                os.kill(entry["pid"], signal.SIGKILL)
                local.wait_until(lambda e=entry: not local.alive(e["pid"]), 10, "exit")


def test_four_processes_survive_kills_and_a_cut(tmp_path: Path, cluster_dir: Path) -> None:
    rng = random.Random(SEED)
    registrar = Registrar.init(tmp_path / "ca", "test-registrar")
    described = local.create(cluster_dir, 4, tmp_path / "ca", proxied=frozenset({3}))
    for entry in described["nodes"]:
        accounts = AccountStore(Path(entry["dir"]), CHEAP_SCRYPT)
        accounts.add(AUDITOR, "auditor", PASSWORD, int(time.time()))
        accounts.close()
    try:
        asyncio.run(asyncio.wait_for(_scenario(cluster_dir, described, registrar, rng), 170))
    except BaseException:
        print(f"GL_SEED={SEED}; node logs in {cluster_dir}/node-*/node.log")
        raise


async def _scenario(directory: Path, described: dict[str, Any], registrar: Registrar,
                    rng: random.Random) -> None:
    cut = described["nodes"][3]
    proxy = FaultProxy(int(cut["peer"].split(":")[1]), int(cut["peer_listen"].split(":")[1]))
    await proxy.start()
    local.start(directory, described)
    cluster = Cluster(directory, described)
    load = Load(described, registrar, rng, cluster.node_keys)
    try:
        await asyncio.to_thread(local.wait_ready, described)
        load.start()
        everyone = [n["node_id"] for n in cluster.nodes]
        await cluster.advance(everyone, "all four nodes commit the load")
        await _bad_peer_input(cluster)

        # kill -9 one node that takes no load; the other three go on
        first = rng.choice([2, 3])
        await cluster.kill(first)
        rest = [n for n in everyone if n != cluster.nodes[first]["node_id"]]
        await cluster.advance(rest, f"commits go on without node-{first}")
        await cluster.restart(first)
        await cluster.caught_up(first, f"node-{first} catches up after a restart")

        # kill -9 the proposer of the next height (of the one after, if that is the node
        # killed before: rotation makes them differ)
        await cluster.poll()
        height = cluster.height("node-2") + 1
        proposer = cluster.index(cluster.validators.proposer(height, 0))
        if proposer == first:
            proposer = cluster.index(cluster.validators.proposer(height + 1, 0))
        await cluster.kill(proposer)
        rest = [n for n in everyone if n != cluster.nodes[proposer]["node_id"]]
        await cluster.advance(rest, f"commits go on without the proposer node-{proposer}",
                              readings=1)
        await cluster.restart(proposer)
        await cluster.caught_up(proposer, f"the proposer node-{proposer} catches up")

        # cut node-3 off through its proxy, then heal it
        proxy.cut()
        await cluster.poll()
        behind = cluster.height("node-3")
        await cluster.advance(everyone[:3], "commits go on with node-3 cut off")

        async def left_behind() -> bool:
            await cluster.poll()
            return cluster.height("node-0") >= behind + 3 and cluster.height("node-3") <= behind + 1

        await _await_true(left_behind, "node-3 falls behind while cut off")
        proxy.heal()
        await cluster.caught_up(3, "node-3 catches up after the heal")
        await cluster.advance(everyone, "all four commit after the heal", readings=1)
        receipted_max = max((h for d in load.devices for h in d.receipted.values()),
                            default=0)

        async def all_have() -> bool:
            await cluster.poll()
            return all(cluster.height(n["node_id"]) >= receipted_max for n in cluster.nodes)

        await _await_true(all_have, "every node holds every receipted block")
        await cluster.poll()
        top = min(cluster.height(n["node_id"]) for n in cluster.nodes)
        served = await asyncio.gather(*(asyncio.to_thread(_block_hashes, n, top)
                                        for n in cluster.nodes))
        for height in range(1, top + 1):
            shown = {n["node_id"]: hashes[height - 1]
                     for n, hashes in zip(cluster.nodes, served, strict=True)}
            assert len(set(shown.values())) == 1, f"GET /v1/blocks/{height} differs: {shown}"
    finally:
        await load.stop()
        await proxy.shutdown()
    print(f"receipted {load.receipted()} batches; heights "
          f"{[cluster.height(n['node_id']) for n in cluster.nodes]}; killed node-{first} "
          f"and the proposer node-{proposer}; node-3 was cut off at height {behind}")
    await asyncio.to_thread(local.stop, described)
    chain = _check_ledgers(cluster, load)
    assert [bytes.fromhex(h) for h in served[0]] == chain[:top], "served and stored differ"


async def _bad_peer_input(cluster: Cluster) -> None:
    """A stranger is refused; over an authenticated link (node-3's key, read from its
    directory) a malformed frame, an undecodable consensus message and a vote forged in
    node-2's name are refused, counted in node-0's status and logged with the peer id."""
    target = cluster.nodes[0]
    host, port = target["peer_listen"].split(":")
    genesis = genesis_mod.load(Path(target["dir"]) / "genesis.json")
    key = crypto.read_private_key(Path(cluster.nodes[3]["dir"]) / "node.key")
    me = wire.LinkIdentity(genesis.chain_id, genesis.hash(), "node-3", key.sign,
                           crypto.verify, genesis.node_keys())
    stranger = wire.LinkIdentity(genesis.chain_id, genesis.hash(), "node-9",
                                 crypto.SigningKey.generate().sign, crypto.verify, {})
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(wire.frame(wire.hello(stranger, os.urandom(32))))
    await reader.read()  # refused and closed
    writer.close()
    reader, writer = await asyncio.open_connection(host, int(port))
    nonce_d = os.urandom(32)
    writer.write(wire.frame(wire.hello(me, nonce_d)))
    nonce_l = wire.read_challenge(me, await read_frame(reader, 4096), "node-0", nonce_d)
    writer.write(wire.frame(wire.auth(me, "node-0", nonce_d, nonce_l)))
    await cluster.poll()
    height = int(cluster.status["node-0"]["consensus"]["height"])  # type: ignore[index]
    forger = crypto.SigningKey.generate()
    writer.write(wire.frame(b"\xa1\x00"))  # a CBOR map, not [kind, ...]
    writer.write(wire.frame(wire.encode_peer_message(ConsensusMsg(b"\x82\x01"))))
    for h in range(height, height + 3):
        vote = sign_vote(genesis.chain_id, PREVOTE, h, 0, None, "node-2", forger.sign)
        writer.write(wire.frame(wire.encode_peer_message(ConsensusMsg(encode_message(vote)))))
    await writer.drain()

    async def counted() -> bool:
        await cluster.poll()
        found = cluster.status["node-0"] or {}
        links = found.get("peers", {}).get("refused_by_code", {})
        engine = found.get("consensus", {}).get("refused_by_code", {})
        return (links.get("cluster.unknown_peer", 0) >= 1 and links.get("cluster.frame", 0) >= 1
                and engine.get("consensus.message", 0) >= 1
                and engine.get("consensus.signature", 0) >= 1)

    await _await_true(counted, "node-0 refuses and counts bad peer input")
    writer.close()
    logged = (Path(target["dir"]) / "node.log").read_text()
    assert '"peer": "node-3", "code": "consensus.signature", ' \
           '"detail": "signed as node-2"' in logged
    assert '"peer": "node-3", "code": "cluster.frame"' in logged


def _block_hashes(entry: dict[str, Any], top: int) -> list[str]:
    """The hash GET /v1/blocks/{height} shows for heights 1..top, with a token of this
    node's auditor account."""
    login = {"username": AUDITOR, "password": PASSWORD}
    token = str(_http(entry, "/v1/auth/token", None, login)["access_token"])
    return [str(_http(entry, f"/v1/blocks/{h}", token)["hash"]) for h in range(1, top + 1)]


def _http(entry: dict[str, Any], path: str, token: str | None,
          body: dict[str, str] | None = None) -> dict[str, Any]:
    """One JSON request; a 429 (the per-account query limit) waits its Retry-After."""
    request = urllib.request.Request(
        f"http://{entry['http']}{path}", data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})})
    for _ in range(20):
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                found: dict[str, Any] = json.loads(answer.read())
                return found
        except urllib.error.HTTPError as exc:
            if exc.code != 429:
                raise
            time.sleep(float(exc.headers.get("Retry-After", "1")))
    raise AssertionError(f"{entry['node_id']}: {path} still rate limited")


def _check_ledgers(cluster: Cluster, load: Load) -> list[bytes]:
    """Every ledger re-verifies and the chains agree; node-0's chain of block hashes."""
    members = {n: (k, 1) for n, k in cluster.node_keys.items()}
    chains: list[list[bytes]] = []
    committed: dict[tuple[str, int], int] = {}
    for index, entry in enumerate(cluster.nodes):
        genesis = genesis_mod.load(Path(entry["dir"]) / "genesis.json")
        store = Store.open(Path(entry["dir"]) / "ledger.sqlite", genesis.chain_id,
                           genesis.hash(), members, crypto.verify)  # re-verifies it all
        try:
            chains.append([store.block(h).hash() for h in range(1, store.height + 1)])
            if index == 0:
                for h in range(1, store.height + 1):
                    for row in store.results(h):  # type: ignore[attr-defined]
                        _, code, device_id, seq = row[:4]
                        if code == "ok" and device_id:
                            committed[(device_id, seq)] = committed.get((device_id, seq), 0) + 1
        finally:
            store.close()
    common = min(len(c) for c in chains)
    assert common > 0
    assert all(c[:common] == chains[0][:common] for c in chains), "the nodes' chains differ"
    doubled = {k: v for k, v in committed.items() if v > 1}
    assert not doubled, f"batches committed twice: {doubled}"
    lost = [(d.device_id, seq) for d in load.devices for seq in d.receipted
            if (d.device_id, seq) not in committed]
    assert not lost, f"receipted batches missing from the ledger: {lost}"
    assert load.receipted() >= 10
    return chains[0]
