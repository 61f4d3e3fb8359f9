"""Agent core: schedule, seq, durable queue, retries and receipts, without I/O.

Theory of operation
-------------------
Every `interval_s` (aligned to wall-clock multiples, so gateways of a fleet batch at
the same instants) the shell reads all its meters and hands the meter groups to
`Outbox.make`, which

1. applies the full-queue policy when the queue holds `queue_limit` batches;
2. takes seq = `store.last_seq() + 1`, signs the batch and `store.append`s it: the
   store makes the message and its seq durable in one step, before any uplink can see
   the bytes.  A crash before the append leaves no trace, so the seq is free again (its
   signed bytes never left the device); after the append the seq is spent for good,
   even once its batch is deleted.  That gives seqs with no gaps and no reuse.

Each uplink owns a `Sender`: it picks the oldest queued batches not yet in flight (at
most `window` at a time) and, when no receipt came within `ack_timeout_s`, sends the
batch again after an exponential backoff with jitter.  Connection failures back off the
same way (`Backoff`).  A batch leaves the queue only when `Outbox.on_receipt` accepts a
receipt for its seq that verifies under a node key of the genesis file; "rejected:*"
ends a batch's life too, since sending it again cannot change the verdict.

Full-queue policy (counted in `counters`, reported as an event, never silent):
- "drop-newest" (default): no batch is made this interval and no seq is spent.  Energy
  registers are cumulative, so the next batch that gets through still carries the total;
  the ledger loses time resolution, not energy, and sees no seq gap.
- "drop-oldest": the oldest queued batch is deleted to make room.  Its seq becomes a gap
  the ledger records as a violation, which is the honest outcome when newer readings
  matter more.

Randomness (`rand() -> [0, 1)`) and time (`now_s`) are passed in; the core keeps
counters and an event list that the shell drains and logs.

Limits: `window` at most receipt.MAX_ENTRIES (64) batches in flight per uplink, so one
receipt can settle everything in flight; `queue_limit` 1..1_000_000; backoff between
`min_s` and `max_s` (default 1 s .. 300 s, the longest a link stays untried).

Portable: runs on MicroPython.
"""

from . import batch as batch_mod
from . import receipt as receipt_mod
from .errors import GridLedgerError, LocalProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    class Store(Protocol):
        """Durable queue of signed batches (SQLite on a Pi, flash files on an ESP32)."""

        def last_seq(self) -> int: ...  # highest seq ever appended, 0 before the first

        def append(self, seq: int, message: bytes, made_at_s: int) -> None: ...

        def delete(self, seq: int) -> bool: ...

        def get(self, seq: int) -> "bytes | None": ...

        def oldest(self, count: int, after_seq: int) -> list[int]: ...

        def depth(self) -> int: ...

        def last_confirmed(self) -> int: ...

        def set_confirmed(self, seq: int) -> None: ...


DROP_NEWEST = "drop-newest"
DROP_OLDEST = "drop-oldest"
POLICIES = (DROP_NEWEST, DROP_OLDEST)
MAX_QUEUE_LIMIT = 1_000_000
COAP_DATAGRAM_BYTES = 1024  # DESIGN.md: a batch should fit one CoAP datagram
COUNTER_NAMES = (
    "batches_made", "batches_dropped_newest", "batches_dropped_oldest", "batches_oversize",
    "sends", "resends", "receipts", "receipts_invalid", "committed", "rejected",
    "receipt_unknown_seq",
)


class Backoff:
    """Exponential backoff with jitter: delays double from min_s up to max_s; each wait
    is drawn from [delay * (1 - jitter), delay] so that gateways that lost the same
    broker do not come back in lockstep."""

    def __init__(
        self, rand: "Callable[[], float]", min_s: float = 1.0, max_s: float = 300.0,
        jitter: float = 0.5,
    ) -> None:
        if not 0 < min_s <= max_s or not 0 <= jitter <= 1:
            raise LocalProtocolError("backoff needs 0 < min_s <= max_s and 0 <= jitter <= 1")
        self.rand = rand
        self.min_s = min_s
        self.max_s = max_s
        self.jitter = jitter
        self.delay_s = 0.0
        self.ready_at_s = 0.0
        self.failures = 0

    def wait_s(self, attempts: int) -> float:
        delay_s = self.min_s
        for _ in range(min(attempts, 64)):
            delay_s = min(self.max_s, delay_s * 2)
        return delay_s * (1 - self.jitter * self.rand())

    def failed(self, now_s: float) -> float:
        """Record a failure; the time of the next attempt."""
        wait_s = self.wait_s(self.failures)
        self.failures += 1
        self.ready_at_s = now_s + wait_s
        return self.ready_at_s

    def succeeded(self) -> None:
        self.failures = 0
        self.ready_at_s = 0.0

    def ready(self, now_s: float) -> bool:
        return now_s >= self.ready_at_s


class Schedule:
    """Batch instants at multiples of interval_s; missed instants are skipped, counted."""

    def __init__(self, interval_s: float, now_s: float) -> None:
        if not interval_s > 0:
            raise LocalProtocolError("interval must be positive")
        self.interval_s = interval_s
        self.missed = 0
        self.next_at_s = self._boundary_after(now_s)

    def _boundary_after(self, now_s: float) -> float:
        return (int(now_s / self.interval_s) + 1) * self.interval_s

    def next_deadline(self) -> float:
        return self.next_at_s

    def due(self, now_s: float) -> bool:
        if self.next_at_s - now_s > 2 * self.interval_s:  # the clock stepped back
            self.next_at_s = self._boundary_after(now_s)
        return now_s >= self.next_at_s

    def advance(self, now_s: float) -> None:
        following = self._boundary_after(now_s)
        self.missed += max(0, int((following - self.next_at_s) / self.interval_s) - 1)
        self.next_at_s = following


class Outbox:
    """The queue's policy: make batches, decide what to send, settle receipts."""

    def __init__(
        self, device_id: str, store: "Store", queue_limit: int, policy: str = DROP_NEWEST,
    ) -> None:
        if not batch_mod.valid_id(device_id):
            raise LocalProtocolError("device id must be 1..64 of [A-Za-z0-9._:-]")
        if not 0 < queue_limit <= MAX_QUEUE_LIMIT or policy not in POLICIES:
            raise LocalProtocolError("queue limit 1..1000000, policy drop-newest|drop-oldest")
        self.device_id = device_id
        self.store = store
        self.queue_limit = queue_limit
        self.policy = policy
        self.counters: dict[str, int] = {}
        for name in COUNTER_NAMES:
            self.counters[name] = 0
        self.events: list[tuple[str, dict[str, object]]] = []
        self.senders: list[Sender] = []

    def _count(self, name: str, event: "dict[str, object] | None" = None) -> None:
        self.counters[name] += 1
        if event is not None:
            self.events.append((name, event))

    def pop_events(self) -> "list[tuple[str, dict[str, object]]]":
        events, self.events = self.events, []
        return events

    def make(
        self, groups: "list[batch_mod.MeterGroup]", now_s: int, clock_synced: bool,
        sign_fn: "Callable[[bytes], bytes]", kcwt: "bytes | None" = None,
    ) -> "int | None":
        """Queue a signed batch of `groups`; its seq, or None when the policy skipped it.

        The certificate (`kcwt`) travels only until a batch of ours is committed: the
        ledger enrolled the device on first sight, and leaving the ~240 bytes out keeps
        more meters within one CoAP datagram."""
        if not self._room(now_s):
            return None
        seq = self.store.last_seq() + 1
        batch = batch_mod.Batch(self.device_id, seq, now_s, clock_synced, groups)
        if self.store.last_confirmed() > 0:
            kcwt = None
        message = batch_mod.sign(batch, sign_fn, kcwt)
        if len(message) > COAP_DATAGRAM_BYTES:
            self._oversize(seq, len(message))
        self.store.append(seq, message, now_s)
        self._count("batches_made")
        return seq

    def _oversize(self, seq: int, size: int) -> None:
        """Counted every time, reported the 1st, 2nd, 4th, 8th... time: a gateway whose
        every batch is oversize would otherwise fill its log with one fact."""
        self.counters["batches_oversize"] += 1
        count = self.counters["batches_oversize"]
        if count & (count - 1) == 0:
            self.events.append(("batches_oversize", {"seq": seq, "bytes": size,
                                                     "count": count}))

    def _room(self, now_s: int) -> bool:
        depth = self.store.depth()
        if depth < self.queue_limit:
            return True
        if self.policy == DROP_NEWEST:
            self._count("batches_dropped_newest", {"depth": depth, "at_s": now_s})
            return False
        for seq in self.store.oldest(depth - self.queue_limit + 1, 0):
            self.store.delete(seq)
            self._forget(seq)
            self._count("batches_dropped_oldest", {"seq": seq, "depth": depth})
        return True

    def _forget(self, seq: int) -> None:
        for sender in self.senders:
            sender.forget(seq)

    def on_receipt(
        self, data: bytes, node_keys: "dict[str, bytes]",
        verify_fn: "Callable[[bytes, bytes, bytes], bool]",
    ) -> "list[receipt_mod.Entry]":
        """Settle the batches a valid receipt names; invalid receipts are counted."""
        try:
            node_id, device_id, entries = receipt_mod.verify(data, node_keys, verify_fn)
        except GridLedgerError as exc:
            self._count("receipts_invalid", {"error": _code(exc), "detail": str(exc)})
            return []
        if device_id != self.device_id:
            self._count("receipts_invalid", {"error": "receipt.device", "detail": device_id})
            return []
        self._count("receipts")
        return [entry for entry in entries if self._settle(node_id, entry)]

    def _settle(self, node_id: str, entry: "receipt_mod.Entry") -> bool:
        if not self.store.delete(entry.seq):
            self.counters["receipt_unknown_seq"] += 1  # a duplicate receipt: harmless
            return False
        self._forget(entry.seq)
        if entry.committed:
            self.counters["committed"] += 1
            if entry.seq > self.store.last_confirmed():
                self.store.set_confirmed(entry.seq)
        else:
            self._count("rejected", {"seq": entry.seq, "status": entry.status, "node": node_id})
        return True

    def status(self) -> "dict[str, object]":
        return {
            "queue_depth": self.store.depth(),
            "queue_limit": self.queue_limit,
            "queue_policy": self.policy,
            "last_seq": self.store.last_seq(),
            "last_confirmed": self.store.last_confirmed(),
            "counters": dict(self.counters),
        }


def _code(exc: GridLedgerError) -> str:
    return exc.code


class Sender:
    """One uplink's view of the queue: what is in flight and when to send it again."""

    def __init__(
        self, name: str, outbox: Outbox, rand: "Callable[[], float]", window: int = 16,
        ack_timeout_s: float = 10.0, resend_max_s: float = 300.0,
    ) -> None:
        if not 0 < window <= receipt_mod.MAX_ENTRIES:
            raise LocalProtocolError("window must be 1.." + str(receipt_mod.MAX_ENTRIES))
        self.name = name
        self.outbox = outbox
        self.window = window
        self.link = Backoff(rand, 1.0, resend_max_s)
        self.resend = Backoff(rand, ack_timeout_s, max(ack_timeout_s, resend_max_s), 0.25)
        self.in_flight: dict[int, tuple[int, float]] = {}  # seq -> (attempts, due at)
        self.connected = False
        outbox.senders.append(self)

    def forget(self, seq: int) -> None:
        self.in_flight.pop(seq, None)

    def link_up(self) -> None:
        """Connected (and subscribed to receipts): everything in flight goes again."""
        self.connected = True
        self.link.succeeded()
        for seq in self.in_flight:
            attempts = self.in_flight[seq][0]
            self.in_flight[seq] = (attempts, 0.0)

    def link_down(self, now_s: float) -> float:
        """Lost or failed to connect; the time of the next connection attempt."""
        self.connected = False
        return self.link.failed(now_s)

    def due(self, now_s: float) -> list[int]:
        """Seqs to send now, oldest first: timed-out ones, then new ones up to the window."""
        if not self.connected:
            return []
        out = [seq for seq in sorted(self.in_flight) if self.in_flight[seq][1] <= now_s]
        room = self.window - len(self.in_flight)
        if room > 0:
            newest = max(self.in_flight) if self.in_flight else 0
            out.extend(self.outbox.store.oldest(room, newest))
        return out

    def sent(self, seq: int, now_s: float) -> None:
        attempts = self.in_flight[seq][0] if seq in self.in_flight else 0
        self.outbox.counters["resends" if attempts else "sends"] += 1
        self.in_flight[seq] = (attempts + 1, now_s + self.resend.wait_s(attempts))

    def next_deadline(self) -> float:
        """When `due` may next return something (besides a newly queued batch)."""
        if not self.connected:
            return self.link.ready_at_s
        times = [due_s for _, due_s in self.in_flight.values()]
        return min(times) if times else float("inf")


class MemoryStore:
    """The in-memory twin of a durable store (tests, benchmarks)."""

    def __init__(self) -> None:
        self.messages: dict[int, bytes] = {}
        self._last_seq = 0
        self._confirmed = 0

    def last_seq(self) -> int:
        return self._last_seq

    def append(self, seq: int, message: bytes, made_at_s: int) -> None:
        if seq <= self._last_seq:
            raise LocalProtocolError("seq " + str(seq) + " was already used")
        self.messages[seq] = message
        self._last_seq = seq

    def delete(self, seq: int) -> bool:
        return self.messages.pop(seq, None) is not None

    def get(self, seq: int) -> "bytes | None":
        return self.messages.get(seq)

    def oldest(self, count: int, after_seq: int) -> list[int]:
        return sorted(seq for seq in self.messages if seq > after_seq)[:count]

    def depth(self) -> int:
        return len(self.messages)

    def last_confirmed(self) -> int:
        return self._confirmed

    def set_confirmed(self, seq: int) -> None:
        self._confirmed = seq
