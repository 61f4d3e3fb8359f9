"""The whole system on this machine, with faults, and a reconciliation.

One aggregator node (solo engine, SQLite ledger, CoAP, HTTP and an embedded MQTT broker)
runs in this process, or with `nodes` > 1 a BFT cluster of that many validators (each with
its own ledger, CoAP, HTTP and broker, linked over loopback TCP; the MQTT agent uplinks to
node-0 and the CoAP agent to node-1, so batches cross the cluster by gossip); simulated
meters answer over Modbus TCP (SDM630 units) and DSMR P1 on a pseudo-terminal; two Pi
edge agents run as their own processes, one uplinking over MQTT (some SDM630 units and
the P1 meter), one over CoAP (the other units).  A live view
prints the height, readings committed per second, commit latency (ingest to signed
receipt), rejects and violations, and every meter in trouble.

Faults are injected on a timeline: one meter's energy counter jumps back (the ledger
records a `rule.backwards` violation), a tampered copy of a genuine batch is posted over
CoAP (rejected `cose.signature`), and a batch re-using a committed seq with other
readings is signed with a gateway's key and posted (rejected `rule.replay`).

At the end (after --duration, or on Ctrl-C) the agents drain and stop, and the ledger is
reconciled against them: every batch each gateway signed is committed exactly once, and
every injected fault was caught.  The exit status is 0 only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiocoap

from aggregator import node as node_mod
from aggregator.net.engine_node import EngineNode
from aggregator.net.ports import Admission, CommitReceipt, Node
from aggregator.net.server import NetConfig, NodeServer, configure_json_logging
from certs.registrar import Registrar
from edge import crypto
from edge.agent.store import StoreError, read_summary
from edge.portable import batch as batch_mod
from edge.portable import cose
from edge.portable import receipt as receipt_mod
from hardware import profiles
from simulator.model import Fleet
from simulator.servers import ModbusTcpSimulator, P1PtyEmitter

LOOPBACK = "127.0.0.1"
INTERVAL_S = 1.0
VIEW_EVERY_S = 2.0
STARTUP_S = 30.0
LATENCY_WINDOW = 2000  # latencies kept for the percentiles: the last ~30 min of a demo
# Injected fault -> where it must show: rejected at admission (the first two) or
# committed with a violation on chain (the last).
EXPECTED = {"cose.signature": "tampered batch", "rule.replay": "replayed seq",
            "rule.backwards": "counter running backwards"}


# -- watching the node -------------------------------------------------------------------


@dataclass
class Watch:
    """What the demo sees pass through the node port: arrivals, commits, meter status."""

    arrived_s: dict[tuple[str, int], float] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    meter_status: dict[str, str] = field(default_factory=dict)
    last_message: dict[str, bytes] = field(default_factory=dict)

    def admitted(self, message: bytes, admission: Admission, started_s: float) -> None:
        if admission.outcome != "accepted":
            return
        self.arrived_s.setdefault((admission.device_id, admission.seq), started_s)
        self.last_message[admission.device_id] = message
        with contextlib.suppress(Exception):
            for group in batch_mod.open_message(message)[1].meters:
                self.meter_status[group.meter_id] = group.status()

    def receipted(self, item: CommitReceipt) -> None:
        _, entries = receipt_mod.parse_payload(cose.parse(item.receipt).payload)
        now_s = time.monotonic()
        for entry in entries:
            started_s = self.arrived_s.pop((item.device_id, entry.seq), None)
            if entry.committed and started_s is not None:
                self.latencies_s.append(now_s - started_s)
        del self.latencies_s[:-LATENCY_WINDOW]


class WatchedNode:
    """The node port with the demo looking on; decisions stay the engine's."""

    def __init__(self, inner: Node, watch: Watch) -> None:
        self.inner = inner
        self.watch = watch

    async def submit(self, message: bytes, transport: str) -> Admission:
        started_s = time.monotonic()
        admission = await self.inner.submit(message, transport)
        self.watch.admitted(message, admission, started_s)
        return admission

    async def receipts(self) -> AsyncIterator[CommitReceipt]:
        async for item in self.inner.receipts():
            self.watch.receipted(item)
            yield item

    def status(self) -> dict[str, object]:
        return self.inner.status()


# -- the demo ------------------------------------------------------------------------------


@dataclass
class Gateway:
    device_id: str
    transport: str
    meters: list[str]
    key: Path
    state: Path
    process: subprocess.Popen[bytes] | None = None


class Demo:
    def __init__(self, directory: Path, meters: int, duration_s: float, seed: int,
                 nodes: int = 1) -> None:
        self.dir = directory
        self.nodes = nodes
        self.meters = meters
        self.duration_s = duration_s
        self.seed = seed
        self.watch = Watch()
        self.faults: dict[str, str] = {}
        self.stop = asyncio.Event()

    async def run(self) -> int:
        configure_json_logging(path=self.dir / "node.log")  # the terminal is for the view
        if self.nodes > 1:
            return await ClusterDemo(self).run()
        registrar = Registrar.init(self.dir / "ca", "demo-utility")
        node_mod.init(self.dir / "node", self.dir / "ca", "gl-demo", int(time.time()))
        opened = node_mod.open_node(self.dir / "node")
        fleet = Fleet(profiles.load("sdm630"), list(range(1, self.meters + 1)), self.seed,
                      time.time() - 3600)
        p1 = P1PtyEmitter(Fleet(profiles.load("dsmr5"), [1], self.seed, time.time()).meter(1))
        modbus = ModbusTcpSimulator(fleet, LOOPBACK, 0)
        engine_node = EngineNode.with_pool(opened.engine, opened.genesis.registrar_public_key)
        server = NodeServer(WatchedNode(engine_node, self.watch), NetConfig(
            node_id=opened.node_id, coap_port=0, http_port=0, embedded_mqtt_port=0))
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.stop.set)
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        gateways: list[Gateway] = []
        try:
            await modbus.start()
            await p1.start()
            await engine_node.start()
            await server.start()
            gateways = self._gateways(registrar, modbus.port, p1.path, server.ports)
            print(f"node up: CoAP {server.ports['coap']}, HTTP {server.ports['http']}, "
                  f"MQTT {server.ports['mqtt']}; {self.meters} SDM630 on Modbus TCP "
                  f"{modbus.port}, DSMR 5 on {p1.path}; ledger in {self.dir / 'node'}")
            await self._timeline(fleet, registrar, gateways, server.ports["coap"], opened)
            print("\n== stopping the agents (they drain their queues)")
            await asyncio.gather(*(asyncio.to_thread(_stop, g) for g in gateways))
            await _settle(opened)
        finally:
            for gateway in gateways:
                _kill(gateway)
            await server.shutdown()
            await engine_node.shutdown()
            await p1.shutdown()
            await modbus.shutdown()
        try:
            return self._reconcile(opened, gateways)
        finally:
            opened.store.close()

    def _gateways(self, registrar: Registrar, modbus_port: int, p1_path: str,
                  ports: dict[str, int]) -> list[Gateway]:
        half = (self.meters + 1) // 2
        plans = [("gw-mqtt", "mqtt", range(1, half + 1), True),
                 ("gw-coap", "coap", range(half + 1, self.meters + 1), False)]
        gateways = []
        for device_id, transport, units, with_p1 in plans:
            urls = {f"SDM630-{u:03d}": f"sdm630@tcp://{LOOPBACK}:{modbus_port}?unit={u}"
                    for u in units}
            if with_p1:
                urls["DSMR5-001"] = f"dsmr5@serial://{p1_path}"
            gateway = self._gateway(registrar, device_id, transport, urls, ports)
            gateways.append(gateway)
        return gateways

    def _gateway(self, registrar: Registrar, device_id: str, transport: str,
                 urls: dict[str, str], ports: dict[str, int],
                 genesis: Path | None = None) -> Gateway:
        issued = registrar.issue(device_id, int(time.time()) - 60, meters=tuple(urls), days=1)
        assert issued.device_key is not None
        key, cert = self.dir / f"{device_id}.key", self.dir / f"{device_id}.cwt"
        crypto.write_private_key(key, issued.device_key)
        cert.write_bytes(issued.certificate)
        gateway = Gateway(device_id, transport, list(urls), key, self.dir / device_id)
        uplink = (["--mqtt", f"mqtt://{LOOPBACK}:{ports['mqtt']}"] if transport == "mqtt"
                  else ["--coap", f"coap://{LOOPBACK}:{ports['coap']}"])
        meters = [arg for meter_id, url in urls.items()
                  for arg in ("--meter", f"{url}{'&' if '?' in url else '?'}id={meter_id}")]
        command = [sys.executable, "-m", "gridledger", "edge", "run", "--device-id",
                   device_id, "--key", str(key), "--cert", str(cert), "--genesis",
                   str(genesis or self.dir / "node" / node_mod.GENESIS_FILE), "--interval-s",
                   str(INTERVAL_S), "--state-dir", str(gateway.state), *meters, *uplink]
        with open(self.dir / f"{device_id}.log", "ab") as log:
            gateway.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        print(f"gateway {device_id} ({transport}): {', '.join(urls)}")
        return gateway

    async def _timeline(self, fleet: Fleet, registrar: Registrar, gateways: list[Gateway],
                        coap_port: int, opened: node_mod.Node) -> None:
        started_s = time.monotonic()
        plan = [(0.3, "backwards"), (0.45, "tampered"), (0.6, "replay")]
        last_view_s, last_readings = started_s, 0
        while not self.stop.is_set():
            elapsed_s = time.monotonic() - started_s
            if elapsed_s >= self.duration_s:
                break
            while plan and elapsed_s >= plan[0][0] * self.duration_s:
                await self._inject(plan.pop(0)[1], fleet, gateways, coap_port)
            if time.monotonic() - last_view_s >= VIEW_EVERY_S:
                readings = int(str(opened.engine.status()["readings_committed"]))
                rate = (readings - last_readings) / (time.monotonic() - last_view_s)
                print(self._view(elapsed_s, rate, opened))
                last_view_s, last_readings = time.monotonic(), readings
            for gateway in gateways:
                if gateway.process is not None and gateway.process.poll() is not None:
                    print(f"gateway {gateway.device_id} exited {gateway.process.returncode}; "
                          f"see {self.dir / (gateway.device_id + '.log')}")
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.25)

    def _view(self, elapsed_s: float, rate: float, opened: node_mod.Node) -> str:
        status = opened.engine.status()
        latencies = sorted(self.watch.latencies_s)
        p50 = f"{statistics.median(latencies) * 1000:.0f}" if latencies else "-"
        p99 = f"{latencies[int(0.99 * (len(latencies) - 1))] * 1000:.0f}" if latencies else "-"
        rejects = status["rejects_by_code"] or {}
        lines = [f"t={elapsed_s:5.1f}s height={status['height']} "
                 f"readings={status['readings_committed']} ({rate:.1f}/s) "
                 f"latency p50={p50} ms p99={p99} ms rejects={json.dumps(rejects)} "
                 f"violations={json.dumps(_violations(opened))}"]
        for meter_id, meter_status in sorted(self.watch.meter_status.items()):
            if meter_status != "ok":
                lines.append(f"    meter {meter_id}: {meter_status}")
        return "\n".join(lines)

    async def _inject(self, fault: str, fleet: Fleet, gateways: list[Gateway],
                      coap_port: int) -> None:
        target = gateways[-1]  # the CoAP gateway
        if fault == "backwards":
            unit = self.meters  # read by the CoAP gateway
            fleet.set_fault(unit, "rollback", fraction=0.5)
            self.faults["rule.backwards"] = f"SDM630-{unit:03d} energy counter set back 50 %"
        elif fault == "tampered":
            genuine = self.watch.last_message.get(target.device_id)
            if genuine is None:
                return
            forged = bytearray(genuine)
            forged[-70] ^= 0x01  # inside the payload, just before the signature
            answer = await _post(coap_port, bytes(forged))
            self.faults["cose.signature"] = f"tampered copy of a {target.device_id} batch: " \
                                            f"{answer}"
        elif fault == "replay":
            answer = await _post(coap_port, _replayed(target))
            self.faults["rule.replay"] = f"{target.device_id} seq 1 signed again: {answer}"
        print(f"   >> fault injected: {fault}")

    def _reconcile(self, opened: node_mod.Node, gateways: list[Gateway],
                   rejects_by_code: dict[str, int] | None = None) -> int:
        print("\n== reconciliation")
        ok = True
        total = 0
        for gateway in gateways:
            signed = _last_seq(gateway.state)
            total += signed
            missing, doubled = [], []
            for seq in range(1, signed + 1):
                heights = {h for _, h, _, _ in opened.store.readings_of(gateway.device_id, seq)}
                if not heights:
                    missing.append(seq)
                elif len(heights) > 1:
                    doubled.append(seq)
            good = signed > 0 and not missing and not doubled
            ok &= good
            print(f"{gateway.device_id}: signed seq 1..{signed}, committed exactly once: "
                  f"{'yes' if good else 'NO'}"
                  + (f" (missing {missing[:10]})" if missing else "")
                  + (f" (doubled {doubled[:10]})" if doubled else ""))
        status = opened.engine.status()
        extra = int(str(status["batches_committed"])) - total
        print(f"batches committed {status['batches_committed']}, signed by the gateways "
              f"{total}{'' if extra == 0 else f' ({extra:+d} unexplained)'}")
        ok &= extra == 0
        rejects = status["rejects_by_code"] if rejects_by_code is None else rejects_by_code
        caught = dict(rejects) if isinstance(rejects, dict) else {}
        caught["rule.backwards"] = _violations(opened).get("rule.backwards", 0)
        for code, what in EXPECTED.items():
            seen = int(caught.get(code, 0))
            ok &= seen > 0
            print(f"{what:<27} injected: {self.faults.get(code, 'NOT INJECTED')}\n"
                  f"{'':<27} caught {seen} x [{code}]")
        print("RECONCILED" if ok else "NOT RECONCILED")
        return 0 if ok else 1


# -- a BFT cluster instead of one node --------------------------------------------------------


class ClusterDemo:
    """`Demo` with `nodes` validators in this process; the timeline and the reconciliation
    are the demo's own, reading node-0's ledger (every node holds the same blocks)."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo

    async def run(self) -> int:
        from aggregator.cluster import local
        from aggregator.cluster.runtime import cluster_node

        d = self.demo
        registrar = Registrar.init(d.dir / "ca", "demo-utility")
        described = local.create(d.dir / "cluster", d.nodes, d.dir / "ca", "gl-demo")
        entries = described["nodes"]
        opened = [node_mod.open_node(Path(e["dir"])) for e in entries]
        nodes = [cluster_node(o) for o in opened]
        servers = [NodeServer(WatchedNode(n, d.watch) if i < 2 else n, NetConfig(
            node_id=o.node_id, coap_port=_port(e["coap"]), http_port=_port(e["http"]),
            embedded_mqtt_port=_port(e["mqtt"])))
            for i, (n, o, e) in enumerate(zip(nodes, opened, entries, strict=True))]
        fleet = Fleet(profiles.load("sdm630"), list(range(1, d.meters + 1)), d.seed,
                      time.time() - 3600)
        p1 = P1PtyEmitter(Fleet(profiles.load("dsmr5"), [1], d.seed, time.time()).meter(1))
        modbus = ModbusTcpSimulator(fleet, LOOPBACK, 0)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, d.stop.set)
        loop.add_signal_handler(signal.SIGTERM, d.stop.set)
        gateways: list[Gateway] = []
        try:
            await modbus.start()
            await p1.start()
            for node, server in zip(nodes, servers, strict=True):
                await node.start()
                await server.start()
            genesis = Path(entries[0]["dir"]) / node_mod.GENESIS_FILE
            mqtt_at, coap_at = servers[0].ports, servers[1].ports
            gateways = [d._gateway(registrar, "gw-mqtt", "mqtt", *self._plan(modbus.port,
                                                                             p1.path, True),
                                   mqtt_at, genesis),
                        d._gateway(registrar, "gw-coap", "coap", *self._plan(modbus.port,
                                                                             p1.path, False),
                                   coap_at, genesis)]
            print(f"cluster of {d.nodes} validators up in {d.dir / 'cluster'}: gateway "
                  f"gw-mqtt -> node-0 (MQTT {mqtt_at['mqtt']}), gw-coap -> node-1 "
                  f"(CoAP {coap_at['coap']}); HTTP {[s.ports['http'] for s in servers]}")
            await d._timeline(fleet, registrar, gateways, coap_at["coap"], opened[0])
            print("\n== stopping the agents (they drain their queues)")
            await asyncio.gather(*(asyncio.to_thread(_stop, g) for g in gateways))
            await _settle_all(opened)
            hashes = {o.node_id: o.engine.status()["last_block_hash"] for o in opened}
            print(f"last block hash per node: {hashes}")
        finally:
            for gateway in gateways:
                _kill(gateway)
            for node, server in zip(nodes, servers, strict=True):
                await server.shutdown()
                await node.shutdown()
            await p1.shutdown()
            await modbus.shutdown()
        try:
            return d._reconcile(opened[0], gateways, _rejects(opened))
        finally:
            for o in opened:
                o.close()

    def _plan(self, modbus_port: int, p1_path: str, first_half: bool) -> tuple[dict[str, str]]:
        half = (self.demo.meters + 1) // 2
        units = range(1, half + 1) if first_half else range(half + 1, self.demo.meters + 1)
        urls = {f"SDM630-{u:03d}": f"sdm630@tcp://{LOOPBACK}:{modbus_port}?unit={u}"
                for u in units}
        if first_half:
            urls["DSMR5-001"] = f"dsmr5@serial://{p1_path}"
        return (urls,)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _rejects(opened: list[node_mod.Node]) -> dict[str, int]:
    """Admission rejects summed over the nodes (a fault is refused where it arrives)."""
    total: dict[str, int] = {}
    for o in opened:
        found = o.engine.status()["rejects_by_code"]
        for code, count in (found.items() if isinstance(found, dict) else ()):
            total[code] = total.get(code, 0) + int(count)
    return total


async def _settle_all(opened: list[node_mod.Node]) -> None:
    """Every mempool drained and every node at one height (a few seconds at most)."""
    deadline_s = time.monotonic() + 10.0
    while time.monotonic() < deadline_s:
        status = [o.engine.status() for o in opened]
        if not any(s["mempool_txs"] for s in status) and \
                len({s["height"] for s in status}) == 1:
            return
        await asyncio.sleep(0.1)


# -- helpers ---------------------------------------------------------------------------------


def _violations(opened: node_mod.Node) -> dict[str, int]:
    counts: dict[str, int] = {}
    for device in opened.app.state.devices.values():
        for code, count in device.violations:
            counts[code] = counts.get(code, 0) + count
    return dict(sorted(counts.items()))


def _replayed(gateway: Gateway) -> bytes:
    """A batch re-using seq 1 with other readings, signed with the gateway's own key."""
    key = crypto.read_private_key(gateway.key)
    group = batch_mod.MeterGroup(gateway.meters[0], int(time.time()),
                                 [batch_mod.Record("1-0:1.8.0", 1, "J")])
    return batch_mod.sign(batch_mod.Batch(gateway.device_id, 1, int(time.time()), True,
                                          [group]), key.sign)


async def _post(port: int, message: bytes) -> str:
    context = await aiocoap.Context.create_client_context()
    try:
        request = aiocoap.Message(code=aiocoap.POST, payload=message, content_format=18,
                                  uri=f"coap://{LOOPBACK}:{port}/gl/v1/up")
        answer = await asyncio.wait_for(context.request(request).response, 10)
        return f"{answer.code} {answer.payload.decode('utf-8', 'replace')}"
    finally:
        await context.shutdown()


def _stop(gateway: Gateway) -> None:
    if gateway.process is not None and gateway.process.poll() is None:
        gateway.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            gateway.process.wait(timeout=STARTUP_S)


def _kill(gateway: Gateway) -> None:
    if gateway.process is not None and gateway.process.poll() is None:
        gateway.process.kill()
        gateway.process.wait()


async def _settle(opened: node_mod.Node) -> None:
    """Give the node time to cut the block holding the last batches the agents sent."""
    deadline_s = time.monotonic() + 5.0
    while opened.engine.status()["mempool_txs"] and time.monotonic() < deadline_s:
        await asyncio.sleep(0.05)


def _last_seq(state_dir: Path) -> int:
    """The last seq a gateway signed, from its queue (0 if it never made one)."""
    try:
        return int(str(read_summary(state_dir)["last_seq"]))
    except StoreError:
        return 0
