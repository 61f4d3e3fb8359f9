"""A BFT cluster of 4 validator processes against one solo node, in the same run.

Theory of operation
-------------------
A registrar in a temporary directory certifies `--devices` gateways, one meter each;
each signs one batch with its kcwt certificate.  The same messages then go, over CoAP on
loopback, to:

    solo      one `gridledger aggregator run` process (a one-validator genesis)
    cluster   `--nodes` validator processes (`aggregator.cluster.local`, the same code as
              `gridledger cluster up`), the devices spread round-robin over all of them,
              so every batch is gossiped, and verified, by every node

Both node kinds run with `--no-pool` (signature checks on each node's event loop), so the
difference is consensus and replication, not the verification pool.  The devices are one
process of their own with `--inflight` CoAP endpoints; a 5.03 answer is retried after its
Max-Age.  Receipts are taken from node-0's embedded MQTT broker (gl/v1/+/ack): every
node publishes the receipts of every block it commits.

Figures: committed readings/s (node-0's status `readings_committed` over the time from the
first submission to the last receipt) and commit latency p50/p99 (a batch's first POST to
its receipt at node-0).  Every process shares this machine's cores; the number is
printed with the results.

    python bench/bench_cluster.py [--devices 2000] [--nodes 4] [--inflight 32]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiocoap
import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import machine, post_until_answered, sign_batches  # a sibling script

from aggregator import node as node_mod
from aggregator.cluster import local

RUN_TIMEOUT_S = 300.0
SAMPLE_S = 0.2


@dataclass
class Result:
    name: str
    readings: int
    seconds: float
    latencies_s: list[float]
    refused: int

    @property
    def rate(self) -> float:
        return self.readings / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        if len(self.latencies_s) < 2:
            return float("nan")
        cuts = statistics.quantiles(self.latencies_s, n=100, method="inclusive")
        return 1000 * cuts[min(98, max(0, round(q * 100) - 1))]


# -- the devices (a process of their own) --------------------------------------------------


async def _post_all(ports: list[str], messages: list[tuple[str, bytes]], inflight: int,
                    pipe: Connection) -> tuple[dict[str, float], int]:
    queue = iter(enumerate(messages))
    sent: dict[str, float] = {}
    refused = 0

    async def worker(client: aiocoap.Context) -> None:
        nonlocal refused
        for index, (device_id, message) in queue:
            uri = f"coap://{ports[index % len(ports)]}/gl/v1/up"
            sent[device_id] = time.time()
            answer = await post_until_answered(client, uri, message)
            refused += answer.code != aiocoap.CHANGED

    clients = [await aiocoap.Context.create_client_context(transports=["udp6"])
               for _ in range(inflight)]
    pipe.send("ready")
    await asyncio.to_thread(pipe.recv)  # "go"
    try:
        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        for client in clients:
            await client.shutdown()
    return sent, refused


def devices(ports: list[str], messages: list[tuple[str, bytes]], inflight: int,
            pipe: Connection) -> None:
    pipe.send(asyncio.run(_post_all(ports, messages, inflight, pipe)))


# -- one run ---------------------------------------------------------------------------------


async def _receipts(mqtt: str, got: dict[str, float], ready: asyncio.Event) -> None:
    host, port = mqtt.split(":")
    async with aiomqtt.Client(host, int(port), protocol=aiomqtt.ProtocolVersion.V311) as client:
        await client.subscribe("gl/v1/+/ack", qos=0)
        ready.set()
        async for message in client.messages:
            got.setdefault(str(message.topic).split("/")[2], time.time())


async def measure(name: str, entries: list[dict[str, Any]],
                  messages: list[tuple[str, bytes]], inflight: int) -> Result:
    got: dict[str, float] = {}
    ready = asyncio.Event()
    collector = asyncio.get_running_loop().create_task(
        _receipts(entries[0]["mqtt"], got, ready))
    await asyncio.wait_for(ready.wait(), 30)
    here, there = multiprocessing.get_context("spawn").Pipe()
    feeder = multiprocessing.get_context("spawn").Process(
        target=devices, args=([e["coap"] for e in entries], messages, inflight, there))
    feeder.start()
    try:
        assert await asyncio.to_thread(here.recv) == "ready"
        start_s = time.time()
        here.send("go")
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while len(got) < len(messages) and time.monotonic() < deadline:
            await asyncio.sleep(SAMPLE_S)
        sent, refused = await asyncio.wait_for(asyncio.to_thread(here.recv), 60)
    finally:
        feeder.join(10)
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
    status = await asyncio.to_thread(local.node_status, entries[0], 5.0) or {}
    end_s = max(got.values(), default=start_s)
    latencies = [got[d] - sent[d] for d in got if d in sent]
    return Result(name, int(status.get("readings_committed", 0)), end_s - start_s, latencies,
                  refused)


def solo_entry(directory: Path, ca_dir: Path) -> dict[str, Any]:
    node_mod.init(directory, ca_dir, "gl-bench-solo", int(time.time()))
    peer = f"127.0.0.1:{local.free_port()}"
    return {"node_id": "node-0", "dir": str(directory), "pid": None, "peer": peer,
            "peer_listen": peer, "coap": f"127.0.0.1:{local.free_port(socket.SOCK_DGRAM)}",
            "http": f"127.0.0.1:{local.free_port()}", "mqtt": f"127.0.0.1:{local.free_port()}"}


def run(name: str, entries: list[dict[str, Any]], messages: list[tuple[str, bytes]],
        inflight: int) -> Result:
    for entry in entries:
        local.start_node(entry)
    try:
        local.wait_ready({"nodes": entries})
        return asyncio.run(measure(name, entries, messages, inflight))
    finally:
        local.stop({"nodes": entries})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--inflight", type=int, default=32)
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    print(f"every process below shares these {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="gl-bench-cluster-") as tmp:
        ca_dir = Path(tmp) / "ca"
        _, signed = sign_batches(ca_dir, args.devices, int(time.time()))
        messages = [(s.device_id, s.message) for s in signed]
        solo = run("solo, 1 node", [solo_entry(Path(tmp) / "solo", ca_dir)], messages,
                   args.inflight)
        cluster = local.create(Path(tmp) / "cluster", args.nodes, ca_dir)
        bft = run(f"BFT, {args.nodes} nodes", cluster["nodes"], messages, args.inflight)
    print()
    print(f"{'engine':18} {'readings':>8} {'readings/s':>10} {'p50 ms':>8} {'p99 ms':>8}  notes")
    for r in (solo, bft):
        note = "" if r.readings >= args.devices and not r.refused else \
            f"INCOMPLETE {r.readings}/{args.devices}, {r.refused} refused"
        print(f"{r.name:18} {r.readings:8d} {r.rate:10.0f} {r.percentile_ms(0.5):8.0f} "
              f"{r.percentile_ms(0.99):8.0f}  {note}")
    if solo.rate > 0:
        print(f"\nBFT / solo committed rate: {bft.rate / solo.rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
