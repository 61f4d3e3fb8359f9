"""Locust users for GridLedger: gateways uplinking over MQTT and CoAP, residents querying.

    MqttGateway   one device identity each (from GL_BUNDLE), its own paho connection
                  (MQTT 3.1.1, which the embedded broker and Mosquitto both speak),
                  subscribed to gl/v1/{device}/ack; every task signs a batch with the next
                  seq, publishes it QoS 1 and waits for the signed commit receipt
    CoapGateway   the same over CoAP: POST /gl/v1/up, then GET /gl/v1/ack/{device} until
                  the receipt names the seq (a synchronous client: common.SyncCoap)
    Resident      signs in (POST /v1/auth/token, once per account and process), then
                  reads its meter's readings, the chain status, a block header and the
                  offline-verifiable receipt of one of its readings (residents may not
                  read whole blocks: their rows belong to other households)

A gateway request's response time is end to end: from signing the batch to holding a
receipt for it that verifies under a genesis node key.  A receipt that does not come
within GL_RECEIPT_S, a rejection, or a receipt that does not verify is a failure with
the reason as its message.  One batch in flight per gateway, as real gateways do.

Run through the recipes (`just load-uplink`, `load-query`, `load-mixed`, `load-curve`),
which start a node, issue the identities and accounts and set GL_*; see docs/load.md.
"""

from __future__ import annotations

import itertools
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent.event
import paho.mqtt.client as paho
from locust import HttpUser, User, between, constant_throughput, task
from paho.mqtt.enums import CallbackAPIVersion

from certs.registrar import Identity
from edge import crypto
from edge.portable import coap
from edge.portable import receipt as receipt_mod
from edge.portable.errors import GridLedgerError
from loadtest.common import COSE_SIGN1, Settings, SyncCoap, batch_for, host_port

SETTINGS = Settings.from_env()
IDENTITIES = SETTINGS.identities()
NODE_KEYS = SETTINGS.node_keys()
RESIDENTS = SETTINGS.resident_rows()
_next_identity = itertools.count()
_tokens: dict[str, str] = {}
_token_lock = threading.Lock()
ACK_POLL_FIRST_S = 0.05
ACK_POLL_MAX_S = 0.5
PRELOAD_BATCHES = 20  # loadtest.run.PRELOAD_BATCHES


def take_identity() -> Identity:
    n = SETTINGS.bundle_offset + next(_next_identity)
    if n >= len(IDENTITIES):
        raise RuntimeError(f"GL_BUNDLE holds {len(IDENTITIES)} identities; more users wanted")
    return IDENTITIES[n]


class Gateway:
    """The state a gateway user keeps: identity, seq, energy register."""

    def __init__(self) -> None:
        self.identity = take_identity()
        self.seq = 0
        self.energy_j = 1_000_000
        self.committed_once = False

    def next_batch(self) -> tuple[int, bytes]:
        self.seq += 1
        self.energy_j += 3600
        message = batch_for(self.identity, self.seq, int(time.time()), self.energy_j,
                            not self.committed_once)
        return self.seq, message


def verified_entries(data: bytes, device_id: str) -> list[receipt_mod.Entry]:
    _, receipt_device, entries = receipt_mod.verify(data, NODE_KEYS, crypto.verify)
    if receipt_device != device_id:
        raise GridLedgerError("receipt for another device", "receipt.device")
    return entries


class MqttGateway(User):
    wait_time = constant_throughput(SETTINGS.rate_per_user)

    def on_start(self) -> None:
        self.gateway = Gateway()
        self.waiting: dict[int, gevent.event.AsyncResult] = {}
        device = self.gateway.identity.device_id
        self.topic = f"gl/v1/{device}/up"
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"lt-{device}",
                             protocol=paho.MQTTv311)
        client.on_message = self._on_message
        host, port = host_port(SETTINGS.mqtt, 1883)
        client.connect(host, port, keepalive=30)
        client.subscribe(f"gl/v1/{device}/ack", qos=1)
        client.loop_start()
        self.client = client

    def on_stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _on_message(self, client: paho.Client, userdata: object,
                    message: paho.MQTTMessage) -> None:
        try:
            entries = verified_entries(bytes(message.payload), self.gateway.identity.device_id)
        except GridLedgerError as exc:
            for result in self.waiting.values():
                result.set_exception(exc)
            return
        for entry in entries:
            result = self.waiting.get(entry.seq)
            if result is not None:
                result.set(entry)

    @task
    def uplink(self) -> None:
        started = time.perf_counter()
        seq, message = self.gateway.next_batch()
        result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self.waiting[seq] = result
        self.client.publish(self.topic, message, qos=1)
        error: Exception | None = None
        try:
            entry = result.get(timeout=SETTINGS.receipt_timeout_s)
            if not entry.committed:
                error = GridLedgerError(entry.status, "receipt.rejected")
            self.gateway.committed_once = True
        except gevent.Timeout:
            error = TimeoutError(f"no receipt within {SETTINGS.receipt_timeout_s:g} s")
        except GridLedgerError as exc:
            error = exc
        finally:
            self.waiting.pop(seq, None)
        self.environment.events.request.fire(
            request_type="MQTT", name="uplink sign→receipt", context={},
            response_time=1000.0 * (time.perf_counter() - started),
            response_length=len(message), exception=error)


class CoapGateway(User):
    wait_time = constant_throughput(SETTINGS.rate_per_user)

    def on_start(self) -> None:
        self.gateway = Gateway()
        self.coap = SyncCoap(SETTINGS.coap, random.Random(self.gateway.identity.device_id))

    def on_stop(self) -> None:
        self.coap.close()

    @task
    def uplink(self) -> None:
        started = time.perf_counter()
        seq, message = self.gateway.next_batch()
        error: Exception | None = None
        try:
            self._send(seq, message)
            self.gateway.committed_once = True
        except (GridLedgerError, OSError) as exc:
            error = exc
        self.environment.events.request.fire(
            request_type="CoAP", name="uplink sign→receipt", context={},
            response_time=1000.0 * (time.perf_counter() - started),
            response_length=len(message), exception=error)

    def _send(self, seq: int, message: bytes) -> None:
        answer = self.coap.request(coap.POST, "/gl/v1/up", message, COSE_SIGN1)
        if answer.code_text != "2.04":
            raise GridLedgerError(answer.payload.decode("utf-8", "replace")[:64]
                                  or answer.code_text, "coap.refused")
        device = self.gateway.identity.device_id
        wait_s, deadline = ACK_POLL_FIRST_S, time.monotonic() + SETTINGS.receipt_timeout_s
        while time.monotonic() < deadline:
            time.sleep(wait_s)
            wait_s = min(ACK_POLL_MAX_S, wait_s * 2)
            found = self.coap.request(coap.GET, "/gl/v1/ack/" + device)
            if found.code_text != "2.05" or not found.payload:
                continue
            for entry in verified_entries(found.payload, device):
                if entry.seq == seq:
                    if not entry.committed:
                        raise GridLedgerError(entry.status, "receipt.rejected")
                    return
        raise GridLedgerError(f"no receipt within {SETTINGS.receipt_timeout_s:g} s",
                              "receipt.timeout")


class Resident(HttpUser):
    wait_time = constant_throughput(SETTINGS.rate_per_user) if SETTINGS.rate_per_user \
        else between(0.5, 1.5)

    def on_start(self) -> None:
        if not RESIDENTS:
            raise RuntimeError("GL_RESIDENTS names no accounts")
        username, password, self.meter = random.choice(RESIDENTS)
        self.headers = {"Authorization": f"Bearer {self._token(username, password)}"}
        self.height = 1
        # A resident's session opens on their readings; the tasks below then run at
        # random, so a short run still reads them at least once.
        self.readings()

    def _token(self, username: str, password: str) -> str:
        with _token_lock:  # one sign-in per account and process: logins are rate limited
            if username not in _tokens:
                with self.client.post("/v1/auth/token", json={
                        "username": username, "password": password}, name="/v1/auth/token",
                        catch_response=True) as answer:
                    if answer.status_code != 200:
                        answer.failure(f"sign-in {answer.status_code}")
                        raise RuntimeError(f"sign-in for {username} failed")
                    _tokens[username] = answer.json()["access_token"]
            return _tokens[username]

    @task(3)
    def readings(self) -> None:
        self.client.get(f"/v1/meters/{self.meter}/readings?limit=50", headers=self.headers,
                        name="/v1/meters/{meter}/readings")

    @task(1)
    def status(self) -> None:
        with self.client.get("/v1/status", headers=self.headers, name="/v1/status",
                             catch_response=True) as answer:
            if answer.status_code == 200:
                self.height = max(1, int(answer.json().get("height", 1)))

    @task(1)
    def header(self) -> None:
        height = random.randint(1, self.height)
        self.client.get(f"/v1/headers/{height}", headers=self.headers, name="/v1/headers/{h}")

    @task(1)
    def receipt(self) -> None:
        """The offline-verifiable proof of one of the meter's readings (the recipes put
        PRELOAD_BATCHES batches of each resident's gateway on the ledger first)."""
        device = self.meter.rsplit(".m", 1)[0]
        seq = random.randint(1, PRELOAD_BATCHES)
        self.client.get(f"/v1/readings/{device}/{seq}/receipt", headers=self.headers,
                        name="/v1/readings/{device}/{seq}/receipt")
