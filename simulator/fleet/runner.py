"""The fleet's asyncio shell: build the gateways, drive their cores, count, reconcile.

Theory of operation
-------------------
`Fleet.run()` starts the uplinks, then one scheduler task keeps a heap of the cores'
`next_deadline()`s: it pops every core that is due, calls `handle_timeout(now)` and
hands the sends to the core's uplink (MQTT or CoAP, alternating by device when both
are given; several brokers or CoAP URLs are used round robin by device, so a fleet can
spread over the nodes of a cluster).  Answers and receipts come back on
the uplinks' tasks; a receipt is verified once, under the genesis node keys, recorded
in the device's log and settled by every gateway of that device (a clone shares its
original's ack topic), which then goes back on the heap.

After `duration_s` the gateways stop reading and drain: the run ends when every queue
is empty and every probe answered, or after `drain_s`.  Then `reconcile` judges the
logs; the exit status is 0 only for a clean reconciliation.

Counters (printed every `progress_s`): sent (first sends), resent, receipted (commits
settled), in flight (queued batches), rejects (receipt entries and CoAP refusals, by
code) and commit latency p50/p99 from signing to the receipt's arrival, over the last
LATENCY_SAMPLES_MAX commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import random
import resource
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from certs.registrar import Identity
from edge import crypto
from edge.portable import receipt as receipt_mod
from edge.portable.errors import GridLedgerError
from simulator.fleet import faults as faults_mod
from simulator.fleet import loadshape, replay
from simulator.fleet.gateway import (
    ACCEPTED,
    GENUINE,
    TRANSIENT_CODES,
    GatewayCore,
    Meter,
    Send,
    Timing,
)
from simulator.fleet.links import CoapLink, MqttLink, receipt_seqs
from simulator.fleet.reconcile import DeviceLog, Report, reconcile

LATENCY_SAMPLES_MAX = 100_000
# A heap entry is (deadline, core index, version); a core re-scheduled before its old
# entry comes up leaves a stale entry that is skipped.  The scheduler never sleeps
# longer than this, so a stop or a clock step is noticed.
TICK_MAX_S = 0.5
SPIN_GUARD_S = 0.01
# Gateways stepped before the loop serves the uplinks again (a top-of-hour burst is
# thousands of gateways due at one instant).
STEPS_PER_TURN_MAX = 256


@dataclass
class FleetConfig:
    interval_s: float
    speed: float = 1.0
    duration_s: float | None = None
    mqtt_urls: list[str] = field(default_factory=list)
    coap_urls: list[str] = field(default_factory=list)
    faults: str = ""
    seed: int = 1
    window: int = 1
    drain_s: float = 60.0
    progress_s: float = 2.0
    replay: Path | None = None
    mqtt_connections: int = 4
    model_start_s: float | None = None


@dataclass
class Stats:
    sent: int = 0
    resent: int = 0
    receipted: int = 0
    receipts_invalid: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES_MAX))

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return 1000.0 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Fleet:
    def __init__(self, identities: list[Identity], node_keys: dict[str, bytes],
                 config: FleetConfig) -> None:
        if not identities:
            raise GridLedgerError("no identities", "sim.usage")
        if not config.mqtt_urls and not config.coap_urls:
            raise GridLedgerError("give --mqtt URL, --coap URL or both", "sim.usage")
        self.config = config
        self.node_keys = node_keys
        self.rng = random.Random(config.seed)
        self.stats = Stats()
        self.logs: dict[str, DeviceLog] = {}
        self.cores: list[GatewayCore] = []
        self.transport: list[str] = []
        self.device_numbers: list[int] = []
        self.by_device: dict[str, list[int]] = {}
        self.versions: list[int] = []
        self.heap: list[tuple[float, int, int]] = []
        self.wake = asyncio.Event()
        self.stop = asyncio.Event()  # set by SIGINT/SIGTERM: stop reading, drain
        self.mqtt: list[MqttLink] = []
        self.coap: CoapLink | None = None
        self.plan = faults_mod.FaultPlan()
        self.started_s = time.time()
        self._build(identities)

    # -- assembly ----------------------------------------------------------------------

    def _build(self, identities: list[Identity]) -> None:
        config = self.config
        model_duration_s = None if config.duration_s is None else config.duration_s * config.speed
        self.plan = faults_mod.plan(faults_mod.parse(config.faults), len(identities),
                                    config.interval_s, model_duration_s, self.rng)
        self.started_s = time.time()
        recording = replay.load(config.replay) if config.replay else None
        # A recording plays from its first row; batch times stay the device's clock.
        model_start_s = recording.start_s if recording is not None else \
            self._model_start(model_duration_s)
        timing = Timing(self.started_s, config.interval_s, config.speed, model_start_s)
        meter_index = 0
        for n, identity in enumerate(identities):
            meters = self._meters(identity, meter_index, timing.model_start_s, recording)
            meter_index += len(meters)
            fault = self.plan.by_device.get(n)
            log = self.logs.setdefault(identity.device_id, DeviceLog())
            own_fault = None if fault is not None and fault.kind == faults_mod.CLONE else fault
            self._add(GatewayCore(identity, meters, timing, log, random.Random(
                self.rng.getrandbits(64)), own_fault, self.node_keys,
                burst=n in self.plan.burst_devices, window=config.window), n)
            if fault is not None and fault.kind == faults_mod.CLONE:
                twins = self._meters(identity, meter_index, timing.model_start_s, recording)
                self._add(GatewayCore(identity, twins, timing, log, random.Random(
                    self.rng.getrandbits(64)), fault, self.node_keys, clone=True,
                    window=config.window), n)

    def _model_start(self, model_duration_s: float | None) -> float:
        """Model time starts so that it never runs ahead of the wall clock: a batch read
        "in the future" would be a clock-skew violation the fleet did not ask for."""
        if self.config.model_start_s is not None:
            return self.config.model_start_s
        ahead_s = (model_duration_s or 7 * 86400.0) * (1 - 1 / self.config.speed)
        return self.started_s - max(0.0, ahead_s)

    def _meters(self, identity: Identity, first: int, model_s: float,
                recording: replay.Recording | None) -> list[Meter]:
        meters: list[Meter] = []
        for k, meter_id in enumerate(identity.meters):
            if recording is not None:
                track = recording.tracks[(first + k) % len(recording.tracks)]
                meters.append(replay.ReplayMeter(meter_id, track))
            else:
                rng = random.Random(self.rng.getrandbits(64))
                kind = loadshape.kind_of(first + k)
                meters.append(loadshape.MeterSim(meter_id, kind, rng, model_s))
        return meters

    def _add(self, core: GatewayCore, device_number: int) -> None:
        index = len(self.cores)
        self.cores.append(core)
        self.versions.append(0)
        self.by_device.setdefault(core.device_id, []).append(index)
        self.device_numbers.append(device_number)
        both = self.config.mqtt_urls and self.config.coap_urls
        if both:
            self.transport.append("mqtt" if device_number % 2 == 0 else "coap")
        else:
            self.transport.append("mqtt" if self.config.mqtt_urls else "coap")
        self._schedule(index)

    # -- scheduling ----------------------------------------------------------------------

    def _schedule(self, index: int, not_before_s: float = 0.0) -> None:
        self.versions[index] += 1
        deadline = max(self.cores[index].next_deadline(), not_before_s)
        if deadline != float("inf"):
            heapq.heappush(self.heap, (deadline, index, self.versions[index]))
            if self.heap[0][1] == index:
                self.wake.set()

    async def _scheduler(self) -> None:
        while True:
            now_s = time.time()
            steps = 0
            while self.heap and self.heap[0][0] <= now_s and steps < STEPS_PER_TURN_MAX:
                _, index, version = heapq.heappop(self.heap)
                if version == self.versions[index]:
                    self._step(index, now_s)
                    steps += 1
            if steps == STEPS_PER_TURN_MAX:
                await asyncio.sleep(0)  # let the uplinks run between slices of a burst
                continue
            wait_s = TICK_MAX_S if not self.heap else min(TICK_MAX_S, self.heap[0][0] - now_s)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wait_s)):
                    await self.wake.wait()

    def _step(self, index: int, now_s: float) -> None:
        sends = self.cores[index].handle_timeout(now_s)
        for item in sends:
            if item.kind == GENUINE or item.kind == faults_mod.CLONE:
                first = self.cores[index].sender.in_flight.get(item.seq, (1, 0.0))[0] <= 1
                if first:
                    self.stats.sent += 1
                else:
                    self.stats.resent += 1
        if sends:
            if self.transport[index] == "mqtt":
                link = self.mqtt[self.device_numbers[index] % len(self.mqtt)]
                link.send(index, sends)
            else:
                assert self.coap is not None
                self.coap.send(index, sends)
        # A core that had nothing to do and is due again at once would spin the loop:
        # it is looked at again after SPIN_GUARD_S at the earliest.
        self._schedule(index, 0.0 if sends else now_s + SPIN_GUARD_S)

    # -- answers and receipts ----------------------------------------------------------------

    def on_answer(self, item: Send, code: str) -> None:
        if code != ACCEPTED and code not in TRANSIENT_CODES:
            self.stats.rejects[code] += 1
        for index in self.by_device.get(item.device_id, []):
            core = self.cores[index]
            if item.kind == faults_mod.CLONE and not core.clone:
                continue
            if item.kind != faults_mod.CLONE and core.clone:
                continue
            core.on_answer(item, code)
            self._schedule(index)

    def on_receipt(self, device_id: str, data: bytes) -> None:
        indexes = self.by_device.get(device_id)
        if indexes is None:
            return  # another fleet's device on the same broker
        try:
            _, receipt_device, entries = receipt_mod.verify(data, self.node_keys, crypto.verify)
        except GridLedgerError:
            self.stats.receipts_invalid += 1
            return
        if receipt_device != device_id:
            self.stats.receipts_invalid += 1
            return
        log = self.logs[device_id]
        for entry in entries:
            if entry.committed:
                log.seq(entry.seq).heights.add(entry.height)
            else:
                log.seq(entry.seq).rejected[entry.reject_code] += 1
                self.stats.rejects[entry.reject_code] += 1
        now_s = time.time()
        for index in indexes:
            latencies = self.cores[index].settle(data, entries, now_s)
            self.stats.receipted += len(latencies)
            self.stats.latencies_s.extend(latencies)
            self._schedule(index)

    # -- the run -----------------------------------------------------------------------------

    def in_flight(self) -> int:
        return sum(core.outbox.store.depth() for core in self.cores)

    def progress_line(self) -> str:
        s = self.stats
        rejects = sum(s.rejects.values())
        return (f"t={time.time() - self.started_s:7.1f}s sent {s.sent} resent {s.resent} "
                f"receipted {s.receipted} in flight {self.in_flight()} rejects {rejects} "
                f"latency p50 {s.percentile_ms(0.5):.0f} ms p99 {s.percentile_ms(0.99):.0f} ms")

    async def run(self, out: FleetOutput) -> Report:
        await self._start_links()
        scheduler = asyncio.get_running_loop().create_task(self._scheduler())
        try:
            await self._run_for(out)
            for index, core in enumerate(self.cores):
                core.stop_reading()
                self._schedule(index)  # an offline fault just ended: its deadline moved
            out.line("draining: no more readings, waiting for every receipt")
            await self._drain(out)
        finally:
            scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scheduler
            await self._stop_links()
        out.line(self.progress_line())
        return reconcile(self.logs)

    async def _start_links(self) -> None:
        for n, url in enumerate(self.config.mqtt_urls):
            prefix = f"gl-fleet-{os.getpid()}-{self.config.seed}-{n}"
            link = MqttLink(url, self.config.mqtt_connections, self.on_receipt, prefix)
            await link.start()
            self.mqtt.append(link)
        if self.config.coap_urls:
            self.coap = CoapLink(self.config.coap_urls, self.on_answer, self.on_receipt,
                                 lambda data, seq: seq in receipt_seqs(data))
            await self.coap.start()

    async def _stop_links(self) -> None:
        for link in self.mqtt:
            await link.shutdown()
        if self.coap is not None:
            await self.coap.shutdown()

    async def _run_for(self, out: FleetOutput) -> None:
        end_s = float("inf") if self.config.duration_s is None else \
            self.started_s + self.config.duration_s
        while time.time() < end_s and not self.stop.is_set():
            await asyncio.sleep(min(self.config.progress_s, max(0.0, end_s - time.time())))
            out.progress(self.progress_line())

    async def _drain(self, out: FleetOutput) -> None:
        deadline_s = time.time() + self.config.drain_s
        while time.time() < deadline_s:
            if all(core.idle() for core in self.cores) and self._links_idle():
                return
            await asyncio.sleep(0.05)
            out.progress(self.progress_line())
        out.line(f"drain timed out after {self.config.drain_s:.0f} s")

    def _links_idle(self) -> bool:
        mqtt_idle = all(link.queued() == 0 for link in self.mqtt)
        coap_idle = self.coap is None or self.coap.in_progress() == 0
        return mqtt_idle and coap_idle

    def unfired_faults(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for core in self.cores:
            armed = "tamper-armed" in core.fired  # fired, but no batch was made after it
            if core.fault is not None and not core.clone and (core.fault_at_s is not None
                                                                or armed):
                out[core.fault.kind] += 1
        return out

    def cpu_s(self) -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime


class FleetOutput:
    """Progress to a terminal (one line rewritten) or a log (one line per period)."""

    def __init__(self, progress_s: float, tty: bool,
                 write: Callable[..., None] = print) -> None:
        self.progress_s = progress_s
        self.tty = tty
        self.write = write
        self.last_s = 0.0

    def progress(self, text: str) -> None:
        now_s = time.monotonic()
        if now_s - self.last_s < self.progress_s:
            return
        self.last_s = now_s
        if self.tty:
            self.write("\r" + text, end="", flush=True)
        else:
            self.write(text, flush=True)

    def line(self, text: str) -> None:
        if self.tty:
            self.write("")
        self.write(text, flush=True)
