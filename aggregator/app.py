"""The ledger application: ABCI-shaped, deterministic, over a frozen State value.

Theory of operation
-------------------
The consensus engine drives the application through the calls of CometBFT's
abci/types/application.go, reduced to what GridLedger needs:

    check_tx(tx, now_s)          admission to the mempool: parse, verify the signature and
                                 certificate (`edge.portable.verify` with the registrar key
                                 of the genesis file and the chain's revocations), refuse a
                                 seq already committed.  Advisory: execution decides again.
                                 `precheck` does the state-free part ahead, on another core.
    prepare_proposal(txs, ...)   the proposer picks mempool txs within the block limits.
    finalize_block(request)      execute a block's txs against the committed State, in
                                 order, and return the results and the next State; nothing
                                 is committed yet.  Depends only on the State and request.
    process_proposal(block)      a validator re-executes a proposed block and accepts it
                                 only when its header's roots are what it computed.
    commit()                     make the finalized State current; returns the app hash.

The State is a frozen value (devices, readings-log size and root, counters); execution
builds the next one from a draft and never mutates the old one, so a proposal can be
executed, compared and thrown away.  Block time is the only clock the rules see.

Apply order within a block is the order of its txs; for each:

    batch    open (COSE, batch fields) -> certificate: the registered one, else the kcwt
             (enrolls the device on first sight, without profiles) -> verify (signature,
             validity at the block time, revocation, meters) -> rules (replay rejects;
             gap, backwards, plausibility, skew are recorded) -> one readings-log leaf per
             meter group -> device history (seq, registers, counts).
    enroll   registrar statement -> certificate valid at block time, not revoked ->
             profiles known and for meters the certificate lists -> newer than the last
             registry statement for the device -> registered (history kept).
    revoke   registrar statement -> the device is revoked for good (also if unknown).
    document record signer (`tx.record_signers`) -> a digest not recorded before ->
             records["document/<digest hex>"]; a verification certificate also adds its
             [valid_from, valid_until) to the meter's verification periods.
    customer record signer -> dated within the skew bound and newer than the meter's
             last customer record -> records["customer/<meter>"] (a later one replaces).

Batches are judged by the verification periods of the state *before* the block plus the
documents earlier in the same block (tx order), so every node flags the same readings.

A rejected tx stays in the block (its bytes are in the txs root) but changes no state
except counters; its result carries the stable code of the error that rejected it.

Readings-log leaf (RFC 9162 leaf data, one per meter group of a committed batch):

    deterministic CBOR [device id, seq, meter id, SHA-256 of the batch's COSE_Sign1 bytes]

State root: SHA-256 of the CBOR array [log size, log root, batches, readings, violations,
device root], where device root = SHA-256 over the concatenated SHA-256 digests of each
device's CBOR record (`Device.to_obj`), in device id order.  When the chain holds class
II/III records, a seventh item follows: the records root, SHA-256 over the concatenated
SHA-256 of CBOR [key, value] of each record in key order (absent while there are none, so
a chain without records keeps the roots it had).

Record values (deterministic CBOR):

    document/<digest hex>  [kind, meter, valid_from_s, valid_until_s, signer, tx hash]
    customer/<meter>       [salted digest, signer, time_s, tx hash]

Limits
------
    VERIFY_CACHE_MAX   65536  ES256 results remembered between check_tx and execution
                              (a pure function of its bytes, so caching is safe); ~150 B
                              each.
    VERIFIED_BATCHES_MAX 16384  verified batches remembered likewise, ~5 KB of objects
                              each (≤ 80 MB): 2 × the default mempool.  A batch is
                              forgotten when its block commits or check_tx refuses it, so
                              the memo holds about the mempool's batches.
    DEVICES_MAX        10^5   registry size before enrollment is refused: the state root
                              hashes every device's digest each block; at 10^5 that is
                              ~15 ms with 2000 devices changed, ~37 ms with 2000 new
                              (`DeviceDigests`; ~60 ms sorted from scratch, as on open);
                              grow beyond it by another chain.
    REGISTERS_MAX      1024   registers (meter, OBIS) remembered per device: 32 meters ×
                              32 records fit; a certificate without a meter list must not
                              let one device grow its record without bound.
    RECORDS_MAX        2×10^5 class II/III records before more are refused: the records
                              root hashes each one each block, like the device root; two
                              a meter (customer, verification) for 10^5 meters.
    PERIODS_MAX        64     verification certificates per meter: a yearly renewal for
                              decades; bounds what the rule scans per meter group.
    EXECUTE_SLICE_TXS  256    txs `execute_steps` applies between pauses: ~20 ms of work,
                              so a node's loop admits and answers while a 2000-tx block
                              executes (~0.3 s) instead of stalling for all of it.

Errors (codes in tx results; nothing here raises for remote bytes)
------
    device.unknown     no registered certificate and none in the message (kcwt)
    tx.profile         enrollment names an unknown profile or a meter the cert lacks
    tx.stale           enrollment not newer than the device's last registry statement
    tx.time            registry statement dated after the block time + skew bound
    registry.full      DEVICES_MAX or RECORDS_MAX reached
    document.exists    a document record for a digest already on chain
    document.periods   PERIODS_MAX verification certificates for the meter already
    device.registers   the batch would take the device past REGISTERS_MAX
    rule.*             see aggregator.rules; cbor.*, cose.*, batch.*, cert.*, tx.* as raised
"""

from __future__ import annotations

import bisect
import hashlib
from collections import ChainMap, OrderedDict
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypeVar, cast

from edge.portable import batch as batch_mod
from edge.portable import cbor, cose, cwt
from edge.portable.errors import (
    GridLedgerError,
    LocalProtocolError,
    RemoteProtocolError,
    RevokedCertificateError,
)
from edge.portable.verify import Verified, verify_message

from . import block as block_mod
from . import fastcbor, rules, tx
from .hotpath import computed_once, frozen_init
from .merkle import EMPTY_ROOT, MemoryNodeStore, MerkleLog, Node, NodeStore

__all__ = [
    "OK",
    "AppConfig",
    "Application",
    "CheckResult",
    "Device",
    "FinalizeRequest",
    "FinalizeResult",
    "Prechecked",
    "State",
    "Steps",
    "TxResult",
    "leaf_bytes",
    "precheck",
    "run_steps",
]

OK = "ok"
UNKNOWN_DEVICE = "device.unknown"
PROFILE = "tx.profile"
STALE = "tx.stale"
TIME = "tx.time"
REGISTRY_FULL = "registry.full"
VERIFY_CACHE_MAX = 65536
VERIFIED_BATCHES_MAX = 16384
DEVICES_MAX = 100_000
REGISTERS_MAX = 1024
TOO_MANY_REGISTERS = "device.registers"
DOCUMENT_EXISTS = "document.exists"
TOO_MANY_PERIODS = "document.periods"
RECORDS_MAX = 200_000
PERIODS_MAX = 64
EXECUTE_SLICE_TXS = 256
DOCUMENT_PREFIX = "document/"
CUSTOMER_PREFIX = "customer/"

T = TypeVar("T")
Steps = Generator[None, None, T]
"""A computation that pauses with a bare `yield` and returns its result (`run_steps`)."""

VerifyFn = Callable[[bytes, bytes, bytes], bool]
ProfileLimits = Mapping[str, tuple[float, float]]
Periods = Mapping[str, tuple[tuple[int, int], ...]]


# -- values ----------------------------------------------------------------------------


@frozen_init
@dataclass(frozen=True)
class Device:
    """A device's registry entry and history, as every node holds it."""

    device_id: str
    certificate: bytes = b""
    meters: tuple[str, ...] = ()
    profiles: tuple[tuple[str, str], ...] = ()
    revoked: bool = False
    registry_time_s: int = -1
    last_seq: int = -1
    last_batch_hash: bytes = b""
    last_height: int = 0
    registers: tuple[tuple[str, str, int | float], ...] = ()
    batches: int = 0
    violations: tuple[tuple[str, int], ...] = ()
    seen_mask: int = rules.SEEN_ALL
    """Which of the SEQ_WINDOW seqs below last_seq are committed (`rules.next_window`)."""

    @property
    def open_mask(self) -> int | None:
        """`seen_mask` when some seq below last_seq is still open, else None: the record
        carries the mask only then, so a device whose batches came in order has the
        record it always had."""
        return None if self.seen_mask == rules.SEEN_ALL else self.seen_mask

    def to_obj(self) -> list[object]:
        """The record as CBOR data (12 items, and `open_mask` as a 13th when set)."""
        mask = self.open_mask
        return [
            self.device_id,
            self.certificate,
            list(self.meters),
            [list(p) for p in self.profiles],
            self.revoked,
            self.registry_time_s,
            self.last_seq,
            self.last_batch_hash,
            self.last_height,
            [list(r) for r in self.registers],
            self.batches,
            [list(v) for v in self.violations],
            *([] if mask is None else [mask]),
        ]

    @classmethod
    def from_obj(cls, obj: object) -> Device:
        if not isinstance(obj, list) or len(obj) not in (12, 13):
            raise LocalProtocolError("device record must be a 12- or 13-item array",
                                     "state.format")
        d, cert, meters, profiles, revoked, rtime, seq, last, height, regs, batches, viol = obj[:12]
        mask = obj[12] if len(obj) == 13 else rules.SEEN_ALL
        return cls(
            d, cert, tuple(meters), tuple((m, p) for m, p in profiles), revoked, rtime, seq,
            last, height, tuple((m, o, v) for m, o, v in regs), batches,
            tuple((c, n) for c, n in viol), mask,
        )

    @computed_once
    def encoded(self) -> bytes:
        """The record's deterministic CBOR (what the state root and the store use):
        `to_obj` encoded, built straight from the fields."""
        return fastcbor.device_record(self)

    @computed_once
    def digest(self) -> bytes:
        return hashlib.sha256(self.encoded).digest()

    @property
    def credit(self) -> int:
        return rules.credit_score(self.batches, dict(self.violations))

    def register_map(self) -> dict[tuple[str, str], int | float]:
        return {(m, o): v for m, o, v in self.registers}


class DeviceDigests:
    """Every device's record digest in device id order, for the state root.

    Sorting every id and fetching every digest each block costs O(devices) of Python
    work (~55 ms at 10^5); `updated` carries the previous block's order forward:
    changed devices are found by bisection, and only new ids cost a merge (one C sort
    of two sorted runs and one dict lookup a device).  Never mutated once built.
    """

    __slots__ = ("digests", "ids")

    def __init__(self, ids: list[str], digests: list[bytes]) -> None:
        self.ids = ids
        self.digests = digests

    @classmethod
    def of(cls, devices: Mapping[str, Device]) -> DeviceDigests:
        ids = sorted(devices)
        return cls(ids, [devices[d].digest for d in ids])

    def updated(self, changed: Mapping[str, Device], known: Mapping[str, Device]
                ) -> DeviceDigests:
        """These digests with `changed` applied; `known` is the devices these cover."""
        new_ids = [d for d in changed if d not in known]
        if new_ids:
            by_id = dict(zip(self.ids, self.digests, strict=True))
            by_id.update((d, device.digest) for d, device in changed.items())
            ids = sorted(self.ids + new_ids)
            return DeviceDigests(ids, [by_id[d] for d in ids])
        digests = self.digests.copy()
        for device_id, device in changed.items():
            digests[bisect.bisect_left(self.ids, device_id)] = device.digest
        return DeviceDigests(self.ids, digests)


@dataclass(frozen=True)
class State:
    """Everything execution reads: the committed result of all blocks so far."""

    height: int = 0
    time_s: int = 0
    devices: Mapping[str, Device] = field(default_factory=lambda: MappingProxyType({}))
    log_size: int = 0
    log_root: bytes = EMPTY_ROOT
    batches: int = 0
    readings: int = 0
    violations: int = 0
    records: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}))
    """Class II/III records by key (module docstring), values deterministic CBOR."""
    periods: Periods = field(default_factory=lambda: MappingProxyType({}))
    """Derived from `records`: each meter's verification validity periods, sorted."""
    digests: DeviceDigests | None = field(default=None, compare=False, repr=False)
    """The device digests in id order, when the state that made this one passed them
    on (`_Draft.freeze`); else built on first use.  A cache: the root never depends
    on whether it was there."""

    def device_digests(self) -> DeviceDigests:
        if self.digests is None:
            object.__setattr__(self, "digests", DeviceDigests.of(self.devices))
        assert self.digests is not None
        return self.digests

    def root(self) -> bytes:
        device_root = hashlib.sha256(b"".join(self.device_digests().digests)).digest()
        summary = [self.log_size, self.log_root, self.batches, self.readings, self.violations]
        extra = [records_root(self.records)] if self.records else []
        return hashlib.sha256(fastcbor.encode([*summary, device_root, *extra])).digest()


def records_root(records: Mapping[str, bytes]) -> bytes:
    digests = b"".join(_sha256(fastcbor.encode([k, records[k]])) for k in sorted(records))
    return _sha256(digests)


def verification_periods(records: Mapping[str, bytes]) -> dict[str, tuple[tuple[int, int], ...]]:
    """Each meter's verification periods, from the document records (for a loaded State)."""
    periods: dict[str, tuple[tuple[int, int], ...]] = {}
    for key, value in records.items():
        if key.startswith(DOCUMENT_PREFIX):
            kind, meter, start, until = _record_fields(value)[:4]
            if kind == "verification":
                periods[meter] = tuple(sorted((*periods.get(meter, ()), (start, until))))
    return periods


@dataclass(frozen=True)
class AppConfig:
    """What execution needs from outside, fixed for the chain's life."""

    chain_id: str
    registrar_public_key: bytes
    verify_fn: VerifyFn
    profiles: Mapping[str, ProfileLimits] = field(default_factory=dict)
    node_keys: Mapping[str, bytes] = field(default_factory=dict)
    """Validator node id -> public key: with the registrar, who signs class II/III
    records (`tx.record_signers`)."""


@frozen_init
@dataclass(frozen=True)
class CheckResult:
    code: str
    tx_hash: bytes = b""
    kind: int = 0
    device_id: str = ""
    seq: int = -1

    @property
    def ok(self) -> bool:
        return self.code == OK


@frozen_init
@dataclass(frozen=True)
class TxResult:
    tx_hash: bytes
    code: str
    device_id: str = ""
    seq: int = -1
    first_leaf: int = 0
    leaf_count: int = 0
    violations: tuple[rules.Violation, ...] = ()

    @property
    def committed(self) -> bool:
        return self.code == OK

    def to_obj(self) -> list[object]:
        found = [v.to_obj() for v in self.violations]
        return [self.tx_hash, self.code, self.device_id, self.seq, self.first_leaf,
                self.leaf_count, found]

    def to_json(self) -> dict[str, object]:
        keys = ("code", "device_id", "seq", "meter_id", "obis", "detail")
        return {
            "tx_hash": self.tx_hash.hex(),
            "code": self.code,
            "device_id": self.device_id,
            "seq": self.seq,
            "first_leaf": self.first_leaf,
            "leaf_count": self.leaf_count,
            "violations": [dict(zip(keys, v.to_obj(), strict=True)) for v in self.violations],
        }


@dataclass(frozen=True)
class FinalizeRequest:
    height: int
    time_s: int
    txs: tuple[bytes, ...]
    proposer: str


@dataclass(frozen=True)
class FinalizeResult:
    request: FinalizeRequest
    results: tuple[TxResult, ...]
    state: State
    state_root: bytes
    leaves: tuple[bytes, ...]
    log_nodes: tuple[Node, ...]
    changed: tuple[Device, ...]
    batch_hashes: tuple[bytes, ...] = ()
    leaf_keys: tuple[tuple[str, int, str], ...] = ()
    """(device id, seq, meter id) of each leaf, for the store's reading index."""
    changed_records: tuple[tuple[str, bytes], ...] = ()
    """Class II/III records this block wrote, for the store."""

    @property
    def violations(self) -> int:
        return sum(len(r.violations) for r in self.results)

    def encode_results(self) -> bytes:
        return fastcbor.encode([r.to_obj() for r in self.results])


def leaf_bytes(device_id: str, seq: int, meter_id: str, batch_hash: bytes) -> bytes:
    return fastcbor.leaf(device_id, seq, meter_id, batch_hash)


@frozen_init
@dataclass(frozen=True)
class Prechecked:
    """The state-free part of checking a batch, done ahead (picklable)."""

    body_hash: bytes
    verified: Verified

    def __reduce__(self) -> tuple[Callable[..., Prechecked], tuple[object, ...]]:
        """Pickle as one flat tuple of plain values: a worker sends one of these per
        batch, and the node's loop unpickles it in a third of the time the default
        object-by-object form takes (`Sign1`, `Batch`, its groups and records, the
        certificate)."""
        message, batch, cert = self.verified.message, self.verified.batch, self.verified.certificate
        groups = tuple((g.meter_id, g.read_time_s, tuple((r.name, r.value, r.unit)
                                                          for r in g.records))
                       for g in batch.meters)
        return _prechecked_from, (
            self.body_hash,
            message.protected, message.alg, message.kid, message.unprotected,
            message.payload, message.signature,
            batch.device_id, batch.seq, batch.sent_at_s, batch.clock_synced, groups,
            cert.issuer, cert.device_id, cert.public_key, cert.issued_at, cert.expires_at,
            cert.meters)


def _prechecked_from(
    body_hash: bytes,
    protected: bytes, alg: int, kid: bytes, unprotected: dict[object, object],
    payload: bytes, signature: bytes,
    device_id: str, seq: int, sent_at_s: int, clock_synced: bool,
    groups: tuple[tuple[str, int, tuple[tuple[str, int | float | str, str], ...]], ...],
    issuer: str, cert_device_id: str, public_key: bytes, issued_at: int, expires_at: int,
    cert_meters: list[str],
) -> Prechecked:
    """`Prechecked.__reduce__`'s inverse."""
    message = cose.Sign1(protected, alg, kid, unprotected, payload, signature)
    meters = [batch_mod.MeterGroup(meter_id, read_time_s,
                                   [batch_mod.Record(*r) for r in records])
              for meter_id, read_time_s, records in groups]
    batch = batch_mod.Batch(device_id, seq, sent_at_s, clock_synced, meters)
    cert = cwt.DeviceCertificate(issuer, cert_device_id, public_key, issued_at, expires_at,
                                 cert_meters)
    return Prechecked(body_hash, Verified(message, batch, cert))


def precheck(
    message: bytes, registrar_public_key: bytes, now_s: int, verify_fn: VerifyFn
) -> Prechecked | None:
    """`verify_message` of a message against its own kcwt, for a worker process.

    Parsing and the two ES256 checks are most of check_tx's cost and need no state, so
    a pool on other cores can do them; `check_tx(..., prechecked)` then does only what
    needs the state (registry, revocation, replay).  None when the message has no kcwt
    or does not verify: check_tx then finds the reason itself.
    """
    try:
        verified = verify_message(message, registrar_public_key, now_s, verify_fn)
    except RemoteProtocolError:  # no kcwt (cert.missing) is one of these
        return None
    kcwt = verified.message.kcwt
    return None if kcwt is None else Prechecked(_sha256(message), verified)


# -- helpers ---------------------------------------------------------------------------


class CachedVerify:
    """A bounded memo of a verify function: ECDSA verification is pure, so a signature
    checked at check_tx need not be checked again at execution."""

    def __init__(self, verify_fn: VerifyFn, size_max: int = VERIFY_CACHE_MAX) -> None:
        self._verify = verify_fn
        self._size_max = size_max
        self._seen: OrderedDict[bytes, bool] = OrderedDict()

    def __call__(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        # Lengths first, so no two argument triples hash the same bytes.
        lengths = len(public_key).to_bytes(4, "big") + len(signature).to_bytes(4, "big")
        key = hashlib.sha256(lengths + public_key + signature + message).digest()
        found = self._seen.get(key)
        if found is None:
            found = self._verify(public_key, message, signature)
            self._seen[key] = found
            if len(self._seen) > self._size_max:
                self._seen.popitem(last=False)
        return found


class _OverlayStore:
    """A NodeStore that reads through to a base store and keeps its own appends, so a
    block can grow the log tentatively (proposals are executed and may be dropped)."""

    def __init__(self, base: NodeStore) -> None:
        self._base = base
        self._count = base.leaf_count()
        self._nodes: dict[tuple[int, int], bytes] = {}
        self.written: list[Node] = []

    def leaf_count(self) -> int:
        return self._count

    def node(self, level: int, index: int) -> bytes:
        found = self._nodes.get((level, index))
        return found if found is not None else self._base.node(level, index)

    def append(self, leaf_count: int, nodes: Sequence[Node]) -> None:
        for level, index, value in nodes:
            self._nodes[(level, index)] = value
        self.written.extend(nodes)
        self._count = leaf_count


class _Draft:
    """The mutable scratch of one block's execution; frozen into a State at the end."""

    def __init__(self, state: State, base: NodeStore, height: int) -> None:
        self.state = state
        self.height = height
        self.devices: dict[str, Device] = {}
        self.added = 0
        self.overlay = _OverlayStore(base)
        self.log = MerkleLog(self.overlay)
        self.leaves: list[bytes] = []
        self.leaf_keys: list[tuple[str, int, str]] = []
        self.batch_hashes: list[bytes] = []
        self.batches = state.batches
        self.readings = state.readings
        self.violations = state.violations
        self.records: dict[str, bytes] = {}
        self.new_periods: dict[str, tuple[tuple[int, int], ...]] = {}
        # Reads through to the committed periods without copying them (ChainMap only
        # writes to its first map, and nothing writes through this one).
        committed = cast("dict[str, tuple[tuple[int, int], ...]]", state.periods)
        self.periods = ChainMap(self.new_periods, committed)

    def device(self, device_id: str) -> Device | None:
        found = self.devices.get(device_id)
        return found if found is not None else self.state.devices.get(device_id)

    def put(self, device: Device) -> None:
        if device.device_id not in self.devices and device.device_id not in self.state.devices:
            self.added += 1
        self.devices[device.device_id] = device

    def device_count(self) -> int:
        return len(self.state.devices) + self.added

    def record(self, key: str) -> bytes | None:
        found = self.records.get(key)
        return found if found is not None else self.state.records.get(key)

    def put_record(self, key: str, value: bytes) -> None:
        if key not in self.state.records and key not in self.records and (
                len(self.state.records) + len(self.records) >= RECORDS_MAX):
            raise _Rejected(REGISTRY_FULL)
        self.records[key] = value

    def freeze(self, request: FinalizeRequest) -> State:
        devices = dict(self.state.devices)
        devices.update(self.devices)
        records, periods = self.state.records, self.state.periods
        if self.records:  # copied only when a record changed: most blocks have none
            records = MappingProxyType({**self.state.records, **self.records})
            periods = MappingProxyType({**self.state.periods, **self.new_periods})
        digests = self.state.device_digests().updated(self.devices, self.state.devices)
        return State(request.height, request.time_s, MappingProxyType(devices), self.log.size,
                     self.log.root(), self.batches, self.readings, self.violations, records,
                     periods, digests)


def _count(
    violations: tuple[tuple[str, int], ...], found: Sequence[rules.Violation]
) -> tuple[tuple[str, int], ...]:
    if not found:  # most batches: the counts stay as they were
        return violations
    counts = dict(violations)
    for v in found:
        counts[v.code] = counts.get(v.code, 0) + 1
    return tuple(sorted(counts.items()))


# -- the application -------------------------------------------------------------------


class Application:
    """ABCI-shaped application over a frozen State and the readings log's node store."""

    def __init__(
        self, config: AppConfig, state: State | None = None, nodes: NodeStore | None = None
    ) -> None:
        self.config = config
        self._verify = CachedVerify(config.verify_fn)
        self._signers = tx.record_signers(config.registrar_public_key, config.node_keys)
        self._verified_cache: OrderedDict[bytes, tuple[bytes, str | None, Verified]] = (
            OrderedDict()
        )
        self.state = state if state is not None else State()
        self.nodes: NodeStore = nodes if nodes is not None else MemoryNodeStore()
        if self.nodes.leaf_count() != self.state.log_size:
            raise LocalProtocolError("readings log and state disagree on the log size")
        self._pending: FinalizeResult | None = None
        self._proposed: FinalizeResult | None = None

    # -- info ---------------------------------------------------------------------------

    @property
    def log(self) -> MerkleLog:
        """The committed readings log (for roots and proofs)."""
        return MerkleLog(self.nodes)

    def app_hash(self) -> bytes:
        return self.state.root()

    # -- mempool admission --------------------------------------------------------------

    def check_tx(
        self, raw: bytes, now_s: int, prechecked: Prechecked | None = None
    ) -> CheckResult:
        """Whether `raw` may enter the mempool; never raises for remote bytes.

        `prechecked` is `precheck`'s result for the batch's message, computed elsewhere
        (a worker process); it saves the parsing and the signatures when it matches.
        """
        try:
            decoded = tx.decode(raw)
        except RemoteProtocolError as exc:
            return CheckResult(exc.code)
        try:
            if decoded.kind == tx.BATCH:
                return self._check_batch(decoded, now_s, prechecked)
            self._check_statement(decoded)
        except RemoteProtocolError as exc:
            return CheckResult(exc.code, decoded.hash, decoded.kind)
        return CheckResult(OK, decoded.hash, decoded.kind)

    def _check_batch(
        self, decoded: tx.Tx, now_s: int, prechecked: Prechecked | None
    ) -> CheckResult:
        body_hash = decoded.body_hash
        if prechecked is not None and prechecked.body_hash == body_hash:
            message = prechecked.verified.message
            # Verified against its own kcwt (precheck declines a message without one).
            self._remember(body_hash, message.kcwt or b"", None, prechecked.verified)
        else:
            message = cose.parse(decoded.body)
        device = self.state.devices.get(message.kid.decode("utf-8", "replace"))
        certificate = device.certificate if device and device.certificate else message.kcwt
        if certificate is None:
            batch = batch_mod.open_message(decoded.body)[1]
            return CheckResult(UNKNOWN_DEVICE, decoded.hash, tx.BATCH, batch.device_id, batch.seq)
        revoked_id = device.device_id if device and device.revoked else None
        batch = self._verified(decoded.body, certificate, revoked_id, now_s, body_hash).batch
        head = CheckResult(OK, decoded.hash, tx.BATCH, batch.device_id, batch.seq)
        last_seq = None if device is None or device.last_seq < 0 else device.last_seq
        if device is not None and rules.check_replay(last_seq, batch, device.seen_mask):
            self._verified_cache.pop(body_hash, None)  # it will not reach a block
            same = device.last_batch_hash == body_hash
            return replace(head, code=rules.DUPLICATE if same else rules.REPLAY)
        return head

    def _verified(
        self, body: bytes, certificate: bytes, revoked_id: str | None, now_s: int,
        body_hash: bytes,
    ) -> Verified:
        """`verify_message`, remembered: it is a pure function of its arguments, and only
        the certificate's validity window depends on the time, so a remembered success
        for the same bytes, certificate and revocation is re-checked against `now_s`.
        `body_hash` is SHA-256 of `body`, which every caller has already."""
        found = self._verified_cache.get(body_hash)
        if found is not None and found[0] == certificate and found[1] == revoked_id:
            cert = found[2].certificate
            if cert.issued_at <= now_s < cert.expires_at:
                return found[2]
        revoked = None if revoked_id is None else {revoked_id}
        verified = verify_message(body, self.config.registrar_public_key, now_s, self._verify,
                                  certificate, revoked)
        self._remember(body_hash, certificate, revoked_id, verified)
        return verified

    def _remember(
        self, body_hash: bytes, certificate: bytes, revoked_id: str | None, verified: Verified
    ) -> None:
        self._verified_cache[body_hash] = (certificate, revoked_id, verified)
        if len(self._verified_cache) > VERIFIED_BATCHES_MAX:
            self._verified_cache.popitem(last=False)

    def _check_statement(self, decoded: tx.Tx) -> None:
        if decoded.kind == tx.DOCUMENT:
            doc = tx.open_document(decoded.body, self._signers, self._verify)
            if DOCUMENT_PREFIX + doc.digest.hex() in self.state.records:
                raise RemoteProtocolError("document already on chain", DOCUMENT_EXISTS)
        elif decoded.kind == tx.CUSTOMER:
            tx.open_customer(decoded.body, self._signers, self._verify)
        else:
            opener = tx.open_enrollment if decoded.kind == tx.ENROLL else tx.open_revocation
            opener(decoded.body, self.config.registrar_public_key, self._verify)

    # -- proposals ----------------------------------------------------------------------

    def prepare_proposal(self, txs: Sequence[bytes], txs_max: int, bytes_max: int) -> list[bytes]:
        """The mempool's txs in order, within the limits, without repeats or garbage."""
        chosen: list[bytes] = []
        seen: set[bytes] = set()
        size = 0
        for raw in txs:
            if len(chosen) == txs_max or size + len(raw) > bytes_max:
                break
            digest = _hash_if_decodes(raw)
            if digest is None or digest in seen:
                continue
            seen.add(digest)
            chosen.append(raw)
            size += len(raw)
        return chosen

    def process_proposal(self, block: block_mod.Block, txs_max: int, bytes_max: int) -> str:
        """OK when `block` is what this node would have produced from the same txs;
        otherwise a short code saying which part differs."""
        header = block.header
        if len(block.txs) > txs_max or sum(map(len, block.txs)) > bytes_max:
            return "proposal.limit"
        if header.chain_id != self.config.chain_id:
            return "proposal.chain"
        if header.height != self.state.height + 1 or header.time_s < self.state.time_s:
            return "proposal.height"
        if header.txs_root != block_mod.txs_root(block.txs):
            return "proposal.txs_root"
        request = FinalizeRequest(header.height, header.time_s, block.txs, header.proposer)
        result = self._proposed = self.execute(request)
        computed = (result.state.log_root, result.state.log_size, result.state_root,
                    result.violations)
        claimed = (header.log_root, header.log_size, header.state_root, header.violations)
        return OK if computed == claimed else "proposal.roots"

    # -- execution ----------------------------------------------------------------------

    def finalize_block(self, request: FinalizeRequest) -> FinalizeResult:
        """Execute a block; the result becomes the State at `commit()`."""
        return run_steps(self.finalize_steps(request))

    def finalize_steps(self, request: FinalizeRequest) -> Steps[FinalizeResult]:
        """`finalize_block`, pausing (a bare `yield`) every EXECUTE_SLICE_TXS txs so a
        node's event loop can admit while a large block executes.  Nothing is pending
        until the generator returns, so one abandoned half-way leaves no trace."""
        if request.height != self.state.height + 1:
            raise LocalProtocolError(f"finalize height {request.height} after {self.state.height}")
        proposed, self._proposed = self._proposed, None
        reuse = proposed is not None and proposed.request == request
        result = proposed if reuse and proposed else (yield from self.execute_steps(request))
        self._pending = result
        return result

    def execute(self, request: FinalizeRequest) -> FinalizeResult:
        """Pure in effect: reads the committed State, returns the next one."""
        return run_steps(self.execute_steps(request))

    def execute_steps(self, request: FinalizeRequest) -> Steps[FinalizeResult]:
        """`execute`, pausing every EXECUTE_SLICE_TXS txs; it reads only the committed
        State, which stays as it is until `commit`, so admission may run in the pauses."""
        draft = _Draft(self.state, self.nodes, request.height)
        results = []
        for index, raw in enumerate(request.txs):
            if index and index % EXECUTE_SLICE_TXS == 0:
                yield
            results.append(self._apply(draft, raw, request))
        yield  # the new state's roots are a slice of their own
        draft.log.extend(draft.leaves)
        state = draft.freeze(request)
        return FinalizeResult(request, tuple(results), state, state.root(), tuple(draft.leaves),
                              tuple(draft.overlay.written), tuple(draft.devices.values()),
                              tuple(draft.batch_hashes), tuple(draft.leaf_keys),
                              tuple(sorted(draft.records.items())))

    def commit(self) -> bytes:
        """Make the finalized State current and append its log nodes; the app hash."""
        if self._pending is None:
            raise LocalProtocolError("commit without finalize_block")
        pending, self._pending = self._pending, None
        self.nodes.append(pending.state.log_size, pending.log_nodes)
        self.state = pending.state
        for body_hash in pending.batch_hashes:  # executed: no longer worth remembering
            self._verified_cache.pop(body_hash, None)
        return pending.state_root

    def _apply(self, draft: _Draft, raw: bytes, request: FinalizeRequest) -> TxResult:
        try:
            decoded = tx.decode(raw)
        except RemoteProtocolError as exc:
            return self._reject(draft, TxResult(_sha256(raw), exc.code))
        if decoded.kind == tx.BATCH:
            return self._apply_batch(draft, decoded, request.time_s)
        try:
            if decoded.kind == tx.ENROLL:
                self._apply_enroll(draft, decoded, request.time_s)
            elif decoded.kind == tx.REVOKE:
                self._apply_revoke(draft, decoded, request.time_s)
            elif decoded.kind == tx.DOCUMENT:
                self._apply_document(draft, decoded)
            else:
                self._apply_customer(draft, decoded, request.time_s)
        except GridLedgerError as exc:
            return TxResult(decoded.hash, exc.code)
        return TxResult(decoded.hash, OK)

    def _reject(self, draft: _Draft, result: TxResult) -> TxResult:
        """A rejected batch: a violation record on chain, no effect on the device."""
        if result.code == rules.DUPLICATE:
            return result
        found = result.violations or (
            rules.Violation(result.code, result.device_id, max(result.seq, 0)),
        )
        draft.violations += len(found)
        return replace(result, violations=found)

    def _apply_batch(self, draft: _Draft, decoded: tx.Tx, time_s: int) -> TxResult:
        body_hash = decoded.body_hash
        draft.batch_hashes.append(body_hash)
        device_id, seq = "", -1
        try:
            message, batch = self._opened(decoded.body, body_hash)
            device_id, seq = batch.device_id, batch.seq
            device = self._verified_device(draft, message.kcwt, decoded.body, batch, time_s,
                                           body_hash)
        except (RemoteProtocolError, _Rejected) as exc:
            return self._reject(draft, TxResult(decoded.hash, exc.code, device_id, seq))
        return self._commit_batch(draft, device, decoded.hash, body_hash, batch, time_s)

    def _opened(self, body: bytes, body_hash: bytes) -> tuple[cose.Sign1, batch_mod.Batch]:
        """`batch.open_message`, answered from the verification cache when it can be."""
        found = self._verified_cache.get(body_hash)
        if found is not None:
            return found[2].message, found[2].batch
        return batch_mod.open_message(body)

    def _verified_device(
        self, draft: _Draft, kcwt: bytes | None, body: bytes, batch: batch_mod.Batch,
        time_s: int, body_hash: bytes,
    ) -> Device:
        device = draft.device(batch.device_id)
        certificate = device.certificate if device and device.certificate else kcwt
        if certificate is None:
            raise _Rejected(UNKNOWN_DEVICE)
        revoked_id = device.device_id if device and device.revoked else None
        verified = self._verified(body, certificate, revoked_id, time_s, body_hash)
        if device is not None:
            return device
        if draft.device_count() >= DEVICES_MAX:
            raise _Rejected(REGISTRY_FULL)
        return Device(batch.device_id, certificate, tuple(verified.certificate.meters))

    def _commit_batch(
        self, draft: _Draft, device: Device, tx_hash: bytes, body_hash: bytes,
        batch: batch_mod.Batch, time_s: int,
    ) -> TxResult:
        """Judge a verified batch by the rules and record it; a replay is rejected."""
        device_id, seq = batch.device_id, batch.seq
        last_seq = None if device.last_seq < 0 else device.last_seq
        replay = rules.check_replay(last_seq, batch, device.seen_mask)
        if replay is not None:
            if seq == device.last_seq and body_hash == device.last_batch_hash:
                return TxResult(tx_hash, rules.DUPLICATE, device_id, seq)
            draft.put(replace(device, violations=_count(device.violations, [replay])))
            return self._reject(draft, TxResult(tx_hash, rules.REPLAY, device_id, seq,
                                                violations=(replay,)))
        late = last_seq is not None and seq < last_seq
        last_registers = device.register_map()
        registers = last_registers if late else rules.next_registers(last_registers, batch)
        if len(registers) > REGISTERS_MAX:
            return self._reject(draft, TxResult(tx_hash, TOO_MANY_REGISTERS, device_id, seq))
        seen_mask, missing = rules.next_window(last_seq, device.seen_mask, seq)
        found = self._rule_violations(device, last_registers, batch, missing, late, time_s)
        found += rules.check_verification(draft.periods, batch) if draft.periods else ()
        first_leaf = draft.log.size + len(draft.leaves)
        for group in batch.meters:
            draft.leaves.append(leaf_bytes(device_id, seq, group.meter_id, body_hash))
            draft.leaf_keys.append((device_id, seq, group.meter_id))
        violations = _count(device.violations, found)
        if late:  # an older batch: only its window bit and the counts change
            draft.put(replace(device, seen_mask=seen_mask, batches=device.batches + 1,
                              violations=violations))
        else:  # the newest batch: its seq, hash, height and registers are on record
            # Every field spelled out (replace() spends more time finding the fields
            # than this call takes); tests/aggregator/test_app.py holds the list complete.
            draft.put(Device(
                device_id=device.device_id, certificate=device.certificate,
                meters=device.meters, profiles=device.profiles, revoked=device.revoked,
                registry_time_s=device.registry_time_s, last_seq=seq,
                last_batch_hash=body_hash, last_height=draft.height,
                registers=_register_rows(registers), batches=device.batches + 1,
                violations=violations, seen_mask=seen_mask))
        draft.batches += 1
        draft.readings += len(batch.meters)
        draft.violations += len(found)
        return TxResult(tx_hash, OK, device_id, seq, first_leaf, len(batch.meters), tuple(found))

    def _rule_violations(
        self, device: Device, registers: rules.Registers, batch: batch_mod.Batch,
        missing: int, late: bool, time_s: int,
    ) -> list[rules.Violation]:
        """The rules that flag a committed batch (`registers`: the device's on record);
        a late batch is older than those registers, so it is not judged against them."""
        limits = {m: self.config.profiles.get(p, {}) for m, p in device.profiles}
        gap = rules.check_gap(missing, batch)
        return [
            *([gap] if gap else []),
            *([] if late else rules.check_backwards(registers, batch)),
            *rules.check_plausibility(limits, batch),
            *rules.check_skew(batch, time_s),
        ]

    def _apply_enroll(self, draft: _Draft, decoded: tx.Tx, time_s: int) -> None:
        statement = tx.open_enrollment(decoded.body, self.config.registrar_public_key,
                                       self._verify)
        _check_statement_time(statement.time_s, time_s)
        parsed = cwt.parse(statement.certificate)[1]
        existing = draft.device(parsed.device_id)
        revoked = {parsed.device_id} if existing and existing.revoked else None
        cert = cwt.verify(statement.certificate, self.config.registrar_public_key, time_s,
                          self._verify, revoked)
        self._check_profiles(statement.profiles, cert.meters)
        if existing is not None and statement.time_s <= existing.registry_time_s:
            raise _Rejected(STALE)
        if existing is None and draft.device_count() >= DEVICES_MAX:
            raise _Rejected(REGISTRY_FULL)
        base = existing or Device(cert.device_id)
        draft.put(replace(
            base, certificate=statement.certificate, meters=tuple(cert.meters),
            profiles=statement.profiles, registry_time_s=statement.time_s))

    def _check_profiles(self, profiles: tuple[tuple[str, str], ...], meters: list[str]) -> None:
        for meter_id, name in profiles:
            if name not in self.config.profiles or (meters and meter_id not in meters):
                raise _Rejected(PROFILE)

    def _apply_revoke(self, draft: _Draft, decoded: tx.Tx, time_s: int) -> None:
        statement = tx.open_revocation(decoded.body, self.config.registrar_public_key,
                                       self._verify)
        _check_statement_time(statement.time_s, time_s)
        existing = draft.device(statement.device_id)
        if existing is not None and existing.revoked:
            raise RevokedCertificateError(f"device {statement.device_id} is already revoked")
        base = existing or Device(statement.device_id)
        draft.put(replace(
            base, revoked=True, registry_time_s=max(base.registry_time_s, statement.time_s)))


    def _apply_document(self, draft: _Draft, decoded: tx.Tx) -> None:
        doc = tx.open_document(decoded.body, self._signers, self._verify)
        key = DOCUMENT_PREFIX + doc.digest.hex()
        if draft.record(key) is not None:
            raise _Rejected(DOCUMENT_EXISTS)
        periods = draft.periods.get(doc.meter, ())
        if doc.kind == "verification" and len(periods) >= PERIODS_MAX:
            raise _Rejected(TOO_MANY_PERIODS)
        draft.put_record(key, fastcbor.encode([doc.kind, doc.meter, doc.valid_from_s,
                                               doc.valid_until_s, doc.signer, decoded.hash]))
        if doc.kind == "verification":
            period = (doc.valid_from_s, doc.valid_until_s)
            draft.new_periods[doc.meter] = tuple(sorted((*periods, period)))

    def _apply_customer(self, draft: _Draft, decoded: tx.Tx, time_s: int) -> None:
        record = tx.open_customer(decoded.body, self._signers, self._verify)
        _check_statement_time(record.time_s, time_s)
        key = CUSTOMER_PREFIX + record.meter
        last = draft.record(key)
        if last is not None and record.time_s <= _record_fields(last)[2]:
            raise _Rejected(STALE)
        draft.put_record(key, fastcbor.encode([record.digest, record.signer, record.time_s,
                                               decoded.hash]))


class _Rejected(GridLedgerError):
    """Internal: a tx the rules reject, with the code of its result."""

    def __init__(self, code: str) -> None:
        GridLedgerError.__init__(self, code, code)


def _check_statement_time(statement_s: int, block_s: int) -> None:
    if statement_s > block_s + rules.SKEW_AHEAD_S:
        raise _Rejected(TIME)


def _register_rows(
    registers: Mapping[tuple[str, str], int | float],
) -> tuple[tuple[str, str, int | float], ...]:
    return tuple((m, o, v) for (m, o), v in sorted(registers.items()))


def _record_fields(value: bytes) -> list[Any]:
    """A record value this application wrote (a CBOR array; module docstring)."""
    found = cbor.decode(value)
    if not isinstance(found, list):
        raise LocalProtocolError("a stored record must be a CBOR array", "state.format")
    return found


def run_steps(steps: Steps[T]) -> T:
    """Drive a pausing generator (`finalize_steps`, ...) to its result without pausing."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return cast(T, done.value)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _hash_if_decodes(raw: bytes) -> bytes | None:
    """The hash of a tx that decodes, else None."""
    try:
        return tx.decode(raw).hash
    except RemoteProtocolError:
        return None
