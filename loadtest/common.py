"""What the locust users and the recipes share, with no locust inside (testable alone).

    Settings     where the node is and what the users sign with, from GL_* variables
    SyncCoap     a synchronous CoAP client over one UDP socket (the portable codec's
                 `Exchange`): asyncio CoAP libraries do not run under gevent, a blocking
                 socket that gevent patches does
    batch_for    a signed batch of one gateway, as the fleet simulator makes them
    gates        the pass/fail verdict on a locust stats CSV

Environment (the recipes set all of it; see docs/load.md):

    GL_BUNDLE       identity bundle (`gridledger certs issue --count`), 0600
    GL_GENESIS      the chain's genesis.json (node keys that sign receipts)
    GL_MQTT         mqtt://HOST:PORT of the broker the node listens on
    GL_COAP         coap://HOST:PORT of the node
    GL_RESIDENTS    file of "username password meter" lines for the query users
    GL_RATE         requests a second each user offers (default 1)
    GL_RECEIPT_S    how long an uplink waits for its commit receipt (default 10)
    GL_BUNDLE_OFFSET  identities of the bundle to skip (each step of the curve takes new
                    devices: a device's seq starts at 1 and must never be reused)
"""

from __future__ import annotations

import csv
import os
import random
import socket
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from certs.registrar import Identity, read_bundle
from edge.portable import batch as batch_mod
from edge.portable import coap
from gridledger import genesis as genesis_mod

COSE_SIGN1 = 18
RECV_BYTES_MAX = 2048


@dataclass(frozen=True)
class Settings:
    bundle: Path | None
    genesis: Path | None
    mqtt: str
    coap: str
    residents: Path | None
    rate_per_user: float
    receipt_timeout_s: float
    bundle_offset: int = 0

    @classmethod
    def from_env(cls) -> Settings:
        def path(name: str) -> Path | None:
            value = os.environ.get(name)
            return Path(value) if value else None

        return cls(path("GL_BUNDLE"), path("GL_GENESIS"),
                   os.environ.get("GL_MQTT", "mqtt://127.0.0.1:1883"),
                   os.environ.get("GL_COAP", "coap://127.0.0.1:5683"),
                   path("GL_RESIDENTS"), float(os.environ.get("GL_RATE", "1")),
                   float(os.environ.get("GL_RECEIPT_S", "10")),
                   int(os.environ.get("GL_BUNDLE_OFFSET", "0")))

    def identities(self) -> list[Identity]:
        return read_bundle(self.bundle) if self.bundle else []

    def node_keys(self) -> dict[str, bytes]:
        return genesis_mod.load(self.genesis).node_keys() if self.genesis else {}

    def resident_rows(self) -> list[tuple[str, str, str]]:
        if self.residents is None:
            return []
        rows = []
        for line in self.residents.read_text().splitlines():
            username, password, meter = line.split(" ", 2)
            rows.append((username, password, meter))
        return rows


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def batch_for(identity: Identity, seq: int, now_s: int, energy_j: int,
              with_certificate: bool) -> bytes:
    groups = [batch_mod.MeterGroup(meter, now_s, [
        batch_mod.Record("1-0:1.8.0", energy_j, "J"),
        batch_mod.Record("1-0:1.7.0", 500.0 + seq % 100, "W"),
    ]) for meter in identity.meters]
    item = batch_mod.Batch(identity.device_id, seq, now_s, True, groups)
    return batch_mod.sign(item, identity.key.sign,
                          identity.certificate if with_certificate else None)


class SyncCoap:
    """One confirmable exchange at a time over a UDP socket (RFC 7252 §4.2 timers)."""

    def __init__(self, url: str, rng: random.Random) -> None:
        self.address = host_port(url, 5683)
        self.rng = rng
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.mid = rng.randrange(1 << 16)

    def close(self) -> None:
        self.sock.close()

    def request(self, code: int, path: str, payload: bytes = b"",
                content_format: int = -1) -> coap.Message:
        """The response; coap.CoapError (coap.timeout, coap.reset) when there is none."""
        self.mid = (self.mid + 1) & 0xFFFF
        token = self.rng.getrandbits(32).to_bytes(4, "big")
        datagram = coap.encode_request(code, path, self.mid, token, payload, content_format)
        exchange = coap.Exchange(datagram, time.monotonic(), self.rng.random)
        self.sock.sendto(datagram, self.address)
        while not exchange.done():
            wait_s = max(0.001, exchange.next_deadline() - time.monotonic())
            self.sock.settimeout(wait_s)
            try:
                data, _ = self.sock.recvfrom(RECV_BYTES_MAX)
            except TimeoutError:
                if exchange.handle_timeout(time.monotonic()):
                    self.sock.sendto(datagram, self.address)
                continue
            reply = exchange.receive(data)
            if reply is not None:
                self.sock.sendto(reply, self.address)
        if exchange.error is not None:
            raise exchange.error
        assert exchange.response is not None
        return exchange.response


# -- gates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    error_ratio_max: float = 0.01
    p99_ms_max: float = 2000.0
    requests_min: int = 1


def gates(stats_csv: Path, gate: Gate) -> list[str]:
    """Failed gates of a locust `*_stats.csv`, one line each; [] when all hold.  Each
    request name is judged on its own, so a fast query cannot hide a slow uplink."""
    with open(stats_csv, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["Name"] != "Aggregated"]
    if not rows:
        return ["no requests were made"]
    failures = []
    for row in rows:
        name = f"{row['Type']} {row['Name']}"
        requests, errors = int(row["Request Count"]), int(row["Failure Count"])
        p99 = float(row["99%"]) if row["99%"] not in ("", "N/A") else float("inf")
        if requests < gate.requests_min:
            failures.append(f"{name}: {requests} requests < {gate.requests_min}")
            continue
        ratio = errors / requests
        if ratio > gate.error_ratio_max:
            failures.append(f"{name}: error ratio {ratio:.3f} > {gate.error_ratio_max}")
        if p99 > gate.p99_ms_max:
            failures.append(f"{name}: p99 {p99:.0f} ms > {gate.p99_ms_max:.0f} ms")
    return failures
