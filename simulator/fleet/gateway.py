"""One virtual gateway of a fleet, without I/O: schedule, meters, queue, faults.

Theory of operation
-------------------
A `GatewayCore` is the agent core (`edge.portable.agent`: `Outbox` signs, seqs and
queues batches, `Sender` decides what goes out and when to send again) with a
schedule, simulated meters and one planned fault around it.  The shell drives it like
every core of the project:

    next_deadline() -> float           wall-clock Unix seconds of the next thing to do
    handle_timeout(now_s) -> [Send]    read meters, fire faults, say what to send, in order
    on_answer(send, code, now_s)       a CoAP answer: "accepted" or the node's error code
    settle(receipt, now_s) -> [ms]     a receipt the shell has verified; commit latencies

Time: `now_s` is the wall clock, injected.  The gateway reads every
`interval_s / speed` wall seconds from a seeded phase within the interval (spread out)
and its meters follow model time, `model_start_s + (now_s - start_s) × speed`, so a
day of load shape can pass in minutes.  Batch times (sent_at, bt) are the device's
clock: the wall clock plus any drift, so the ledger's clock-skew rule sees the truth.

Everything the gateway signs is written into its `DeviceLog` (`reconcile`) as it is
made: a genuine batch under its seq, a fault's batch as a probe.  A clone (a second
gateway with the same identity) writes all its batches as probes, since the ledger
must refuse them.

Window: one batch in flight by default.  The node admits a device's messages
concurrently, so two in flight could reach a block out of seq order, and the later one
would then be refused as a replay: honest gateways wait.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from certs.registrar import Identity
from edge.portable import agent as agent_mod
from edge.portable import batch as batch_mod
from edge.portable import receipt as receipt_mod
from simulator.fleet import faults as faults_mod
from simulator.fleet.reconcile import DeviceLog

GENUINE = "genuine"
ACCEPTED = "accepted"
# Answers that do not end a batch's life: it stays queued and goes again.
TRANSIENT_CODES = ("mempool.duplicate", "mempool.full", "net.busy", "net.timeout", "net.node")
# A gateway keeps this many batches at most; beyond, the newest reading is skipped
# (the agent's drop-newest policy: energy registers still carry the total).
QUEUE_LIMIT = 10_000
ACK_TIMEOUT_S = 10.0
RESEND_MAX_S = 60.0
# A rollback batch is sent at most this many times, ACK_TIMEOUT_S apart.
PROBE_TRIES_MAX = 6


class Meter(Protocol):
    meter_id: str

    def read(self, model_s: float) -> list[batch_mod.Record]: ...

    def set_back(self, fraction: float) -> None: ...


@dataclass(frozen=True)
class Send:
    device_id: str
    seq: int
    message: bytes
    kind: str  # GENUINE, or the fault kind of a probe


@dataclass(frozen=True)
class Timing:
    start_s: float           # wall clock at the fleet's start
    interval_s: float        # model seconds between readings
    speed: float             # model seconds per wall second
    model_start_s: float     # model time at start_s

    @property
    def wall_interval_s(self) -> float:
        return self.interval_s / self.speed

    def model_s(self, now_s: float) -> float:
        return self.model_start_s + (now_s - self.start_s) * self.speed

    def wall_s(self, model_s: float) -> float:
        return self.start_s + (model_s - self.model_start_s) / self.speed


class GatewayCore:
    def __init__(self, identity: Identity, meters: list[Meter], timing: Timing,
                 log: DeviceLog, rng: random.Random, fault: faults_mod.DeviceFault | None,
                 node_keys: dict[str, bytes], burst: bool = False, clone: bool = False,
                 window: int = 1) -> None:
        self.identity = identity
        self.node_keys = node_keys
        self.device_id = identity.device_id
        self.meters = meters
        self.timing = timing
        self.log = log
        self.rng = rng
        self.fault = fault
        self.burst = burst
        self.clone = clone
        self.outbox = agent_mod.Outbox(identity.device_id, agent_mod.MemoryStore(), QUEUE_LIMIT)
        self.sender = agent_mod.Sender("up", self.outbox, rng.random, window, ACK_TIMEOUT_S,
                                       RESEND_MAX_S)
        self.sender.link_up()
        first_s = timing.start_s + rng.uniform(0.0, timing.wall_interval_s)
        if clone and fault is not None:
            first_s = timing.wall_s(timing.model_start_s + fault.at_s)
        self.next_read_s = first_s
        self.next_burst_s = self._burst_after(timing.start_s)
        self.fault_at_s = None if fault is None else timing.wall_s(
            timing.model_start_s + fault.at_s)
        self.online_at_s: float | None = None
        self.drift_s = 0.0
        self.reading = True
        self.made_at: dict[int, float] = {}
        self.kept: tuple[int, bytes] | None = None  # the first batch, for the replay fault
        self.fired: list[str] = []
        self.pending_probes: set[int] = set()
        # A rollback batch goes again, as a real gateway keeps it queued, until the
        # node's verdict: in a cluster the node it reaches may not have executed the
        # commit yet, and then holds the seq as a pending duplicate without a receipt.
        self.probe_retries: dict[int, tuple[Send, float, int]] = {}

    # -- schedule ----------------------------------------------------------------------

    def _burst_after(self, now_s: float) -> float:
        if not self.burst:
            return float("inf")
        hour = (int(self.timing.model_s(now_s) // 3600) + 1) * 3600
        return self.timing.wall_s(hour)

    def next_deadline(self) -> float:
        # Offline by our own fault, the link's reconnect time means nothing: the fault's
        # end does.
        times = [self.online_at_s if self.online_at_s is not None
                 else self.sender.next_deadline()]
        times.extend(due_s for _, due_s, _ in self.probe_retries.values())
        if self.reading:
            times.extend((self.next_read_s, self.next_burst_s))
            if self.fault_at_s is not None and not self.clone:
                times.append(self.fault_at_s)
        in_flight = len(self.sender.in_flight)
        if self.sender.connected and in_flight < self.sender.window and \
                self.outbox.store.depth() > in_flight:
            times.append(0.0)  # queued and room in the window: send now
        return min(times)

    def stop_reading(self) -> None:
        """The run is over: make no more batches, drain what is queued.  An offline fault
        still running ends now, or the drain would wait for it."""
        self.reading = False
        if self.online_at_s is not None:
            self.online_at_s = 0.0

    def idle(self) -> bool:
        return self.outbox.store.depth() == 0 and not self.pending_probes

    # -- the step ----------------------------------------------------------------------

    def handle_timeout(self, now_s: float) -> list[Send]:
        out: list[Send] = []
        if self.online_at_s is not None and now_s >= self.online_at_s:
            self.online_at_s = None
            self.sender.link_up()
        if self.reading and self.fault_at_s is not None and now_s >= self.fault_at_s \
                and not self.clone:
            out.extend(self._fire(now_s))
        if self.reading and now_s >= self.next_burst_s:
            self.next_burst_s = self._burst_after(now_s)
            self._make(now_s)
        if self.reading and now_s >= self.next_read_s:
            while self.next_read_s <= now_s:
                self.next_read_s += self.timing.wall_interval_s
            probe = self._make(now_s)
            if probe is not None:
                out.append(probe)
        out.extend(self._due(now_s))
        out.extend(self._probes_due(now_s))
        return out

    def _probes_due(self, now_s: float) -> list[Send]:
        out = []
        for seq, (probe, due_s, tries) in list(self.probe_retries.items()):
            if due_s > now_s:
                continue
            if tries >= PROBE_TRIES_MAX:
                del self.probe_retries[seq]  # the reconciliation reports its silence
                self.pending_probes.discard(seq)
                continue
            self.probe_retries[seq] = (probe, now_s + ACK_TIMEOUT_S, tries + 1)
            out.append(probe)
        return out

    def _due(self, now_s: float) -> list[Send]:
        out = []
        for seq in self.sender.due(now_s):
            message = self.outbox.store.get(seq)
            if message is None:
                self.sender.forget(seq)
                continue
            if self.clone and seq not in self.sender.in_flight:
                # Counted when it leaves, not when made: under a backlog the original's
                # late commit receipt for this seq can settle it before it is ever sent.
                self.log.seq(seq).probes[faults_mod.CLONE] += 1
            self.sender.sent(seq, now_s)
            out.append(Send(self.device_id, seq, message, faults_mod.CLONE if self.clone
                            else GENUINE))
        return out

    def _make(self, now_s: float) -> Send | None:
        """Read every meter and queue a signed batch; a tampered copy if one is armed."""
        device_s = int(now_s + self.drift_s)
        model_s = self.timing.model_s(now_s)
        groups = [batch_mod.MeterGroup(m.meter_id, device_s, m.read(model_s))
                  for m in self.meters]
        seq = self.outbox.make(groups, device_s, True, self.identity.key.sign,
                               self.identity.certificate)
        if seq is None:
            return None
        self.made_at[seq] = now_s
        entry = self.log.seq(seq)
        if not self.clone:  # a clone's batch counts as a probe once it is sent (`_due`)
            entry.genuine += 1
        message = self.outbox.store.get(seq)
        assert message is not None
        if self.kept is None:
            self.kept = (seq, message)
        if "tamper-armed" in self.fired:
            self.fired.remove("tamper-armed")
            self.fired.append(faults_mod.TAMPER)
            entry.probes[faults_mod.TAMPER] += 1
            return Send(self.device_id, seq, tampered(message), faults_mod.TAMPER)
        return None

    # -- faults ------------------------------------------------------------------------

    def _fire(self, now_s: float) -> list[Send]:
        """Fire the planned fault; a fault that needs a commit first waits for one."""
        assert self.fault is not None
        kind = self.fault.kind
        if kind in (faults_mod.REPLAY, faults_mod.ROLLBACK) and not self._has_commit():
            self.fault_at_s = now_s + self.timing.wall_interval_s
            return []
        self.fault_at_s = None
        self.fired.append(kind if kind != faults_mod.TAMPER else "tamper-armed")
        if kind == faults_mod.OFFLINE:
            self.sender.link_down(now_s)
            self.online_at_s = now_s + self.fault.param / self.timing.speed
        elif kind == faults_mod.DRIFT:
            self.drift_s = self.fault.param
        elif kind == faults_mod.BACKWARDS:
            self.meters[0].set_back(self.fault.param)
        elif kind == faults_mod.REPLAY:
            return [self._replay()]
        elif kind == faults_mod.ROLLBACK:
            return [self._rollback(now_s)]
        return []

    def _has_commit(self) -> bool:
        return self.kept is not None and bool(self.log.seq(self.kept[0]).heights)

    def _replay(self) -> Send:
        assert self.kept is not None
        seq, message = self.kept
        self.log.seq(seq).probes[faults_mod.REPLAY] += 1
        return Send(self.device_id, seq, message, faults_mod.REPLAY)

    def _rollback(self, now_s: float) -> Send:
        """A batch signed under the last committed seq, as a gateway restored from an
        old backup would: same key, new readings, a seq the ledger has already seen."""
        seq = self.outbox.store.last_confirmed()
        device_s = int(now_s + self.drift_s)
        model_s = self.timing.model_s(now_s)
        groups = [batch_mod.MeterGroup(m.meter_id, device_s, m.read(model_s))
                  for m in self.meters]
        item = batch_mod.Batch(self.device_id, seq, device_s, True, groups)
        self.log.seq(seq).probes[faults_mod.ROLLBACK] += 1
        self.pending_probes.add(seq)
        probe = Send(self.device_id, seq, batch_mod.sign(item, self.identity.key.sign),
                     faults_mod.ROLLBACK)
        self.probe_retries[seq] = (probe, now_s + ACK_TIMEOUT_S, 1)
        return probe

    # -- answers and receipts ----------------------------------------------------------

    def on_answer(self, send: Send, code: str) -> None:
        """A CoAP answer.  Probes record it; a final refusal ends a batch's life."""
        if code == ACCEPTED or code in TRANSIENT_CODES:
            return
        entry = self.log.seq(send.seq)
        if send.kind != GENUINE:
            entry.answers[code] += 1
            self.pending_probes.discard(send.seq)
            self.probe_retries.pop(send.seq, None)
        if send.kind in (GENUINE, faults_mod.CLONE) and self.outbox.store.delete(send.seq):
            self.sender.forget(send.seq)
            self.made_at.pop(send.seq, None)
            if send.kind == GENUINE:
                entry.answers[code] += 1

    def settle(self, data: bytes, entries: list[receipt_mod.Entry],
               now_s: float) -> list[float]:
        """Settle a receipt the shell verified; commit latencies (s) of our batches."""
        trusted = self.outbox.on_receipt(data, self.node_keys, _verified_by_shell)
        latencies = []
        for entry in trusted:
            made = self.made_at.pop(entry.seq, None)
            if entry.committed and made is not None:
                latencies.append(now_s - made)
        for entry in entries:
            if not entry.committed:
                self.pending_probes.discard(entry.seq)
                self.probe_retries.pop(entry.seq, None)
        return latencies


def _verified_by_shell(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """The shell verified the receipt once under the genesis node keys before handing it
    to every gateway of the device; see `Fleet.on_receipt`."""
    return True


def tampered(message: bytes) -> bytes:
    """The same message with the last signature byte flipped (the signature is the last
    field of a COSE_Sign1, so its last byte is the message's last byte)."""
    return message[:-1] + bytes([message[-1] ^ 0x01])

