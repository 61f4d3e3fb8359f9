"""What the network shell needs from a node, and what it gives back.

Theory of operation
-------------------
The shell (CoAP, MQTT, HTTP) is a thin adapter; the node decides.  For every message a
transport receives the shell awaits `Node.submit(message, transport)` and gets an
`Admission`:

    accepted     the node took the batch into its mempool; it owes a commit receipt.
                 CoAP answers 2.04 with `acceptance_payload`.
    rejected     with a stable error code (`edge.portable.errors` and
                 `edge.portable.verify`: cbor.*, cose.*, batch.*, cert.*; the node's own
                 rule.* / mempool.* / tx.*; the shell's net.*).  CoAP answers 4.xx with
                 the code in the diagnostic payload (`coap_code_for`).
    overloaded   the mempool is full; try again after `retry_after_s`.  CoAP answers
                 5.03 with Max-Age; MQTT holds the message and retries.

Commit receipts come out of `Node.receipts()`, an async iterator of `CommitReceipt`
(device id, signed receipt bytes in the format of `edge.portable.receipt`).  The shell
publishes each on MQTT `gl/v1/{device}/ack` and keeps the latest per device for CoAP
GET `/gl/v1/ack/{device}` (Observe).  `Node.status()` is a JSON-able dict served at
HTTP GET /v1/status.

`submit` must not block the event loop: a node whose checks are CPU-heavy runs them in
a pool (`aggregator.net.verifier.BatchingVerifier`) or a thread (`ThreadedNode`).

Codes the shell itself gives (before the node sees a message):

    net.too_large        over MESSAGE_BYTES_MAX                         CoAP 4.13
    net.content_format   CoAP Content-Format is not 18 (COSE_Sign1)     CoAP 4.15
    net.busy             the shell's own in-flight bound is reached     CoAP 5.03
    net.node             the node raised instead of answering (a bug)   CoAP 5.00
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from edge.portable import cbor, cose

TRANSPORT_COAP = "coap"
TRANSPORT_MQTT = "mqtt"

# A message may be as big as the COSE layer accepts (16 KiB payload + certificate);
# anything larger is refused before parsing.  A batch is <= 1 KiB in practice.
MESSAGE_BYTES_MAX = cose.MAX_MESSAGE_BYTES
# Diagnostic payloads stay short: they go back in one CoAP datagram.
DIAGNOSTIC_BYTES_MAX = 128
# A node that overloads asks for at least 1 s and at most 60 s (CoAP Max-Age is seconds).
RETRY_AFTER_S_MIN = 1
RETRY_AFTER_S_MAX = 60

CODE_TOO_LARGE = "net.too_large"
CODE_CONTENT_FORMAT = "net.content_format"
CODE_BUSY = "net.busy"
CODE_NODE = "net.node"

Outcome = Literal["accepted", "rejected", "overloaded"]


@dataclass(frozen=True)
class Admission:
    """The node's answer to one submitted message."""

    outcome: Outcome
    device_id: str = ""
    seq: int = -1
    code: str = ""
    reason: str = ""
    retry_after_s: int = 0

    @classmethod
    def accepted(cls, device_id: str, seq: int) -> Admission:
        return cls("accepted", device_id, seq)

    @classmethod
    def rejected(cls, code: str, reason: str = "", device_id: str = "", seq: int = -1) -> Admission:
        return cls("rejected", device_id, seq, code, reason)

    @classmethod
    def overloaded(cls, retry_after_s: int, reason: str = "mempool full") -> Admission:
        retry = min(max(retry_after_s, RETRY_AFTER_S_MIN), RETRY_AFTER_S_MAX)
        return cls("overloaded", code="mempool.full", reason=reason, retry_after_s=retry)


@dataclass(frozen=True)
class CommitReceipt:
    """A signed receipt (edge.portable.receipt) for one device."""

    device_id: str
    receipt: bytes


class Node(Protocol):
    """The narrow port the shell drives; `aggregator.app` implements it for real."""

    async def submit(self, message: bytes, transport: str) -> Admission: ...

    def receipts(self) -> AsyncIterator[CommitReceipt]: ...

    def status(self) -> dict[str, object]: ...


class BlockSource(Protocol):
    """A node that can show its committed blocks (optional beside `Node`)."""

    def block(self, height: int) -> dict[str, object] | None: ...


def _no_block(height: int) -> dict[str, object] | None:
    return None


class RegistrySink(Protocol):
    """A node that takes registry transactions (optional beside `Node`): enrollments and
    revocations the registrar signed, as `aggregator.tx` encodes them.  They need no
    access control of their own: only the registrar's signature makes them valid."""

    def submit_registry(self, tx: bytes) -> Admission: ...


def registry_submitter(node: object) -> Callable[[bytes], Admission] | None:
    """`node.submit_registry` if the node has one, else None."""
    found = getattr(node, "submit_registry", None)
    return found if callable(found) else None


def block_lookup(node: object) -> Callable[[int], dict[str, object] | None]:
    """`node.block` if the node has one, else a lookup that finds no block."""
    found = getattr(node, "block", None)
    return found if callable(found) else _no_block


class ThreadedNode:
    """Adapt a node whose `submit` is synchronous and CPU-heavy: run it in a thread.

    `check(message, transport) -> Admission` runs in the default executor, so the event
    loop keeps serving while it works; receipts and status pass through unchanged.
    """

    def __init__(
        self,
        check: Callable[[bytes, str], Admission],
        receipts: Callable[[], AsyncIterator[CommitReceipt]],
        status: Callable[[], dict[str, object]],
    ) -> None:
        self._check = check
        self._receipts = receipts
        self._status = status

    async def submit(self, message: bytes, transport: str) -> Admission:
        return await asyncio.to_thread(self._check, message, transport)

    def receipts(self) -> AsyncIterator[CommitReceipt]:
        return self._receipts()

    def status(self) -> dict[str, object]:
        return self._status()


def acceptance_payload(admission: Admission) -> bytes:
    """The short CBOR answer to an accepted batch: {1: device id, 2: seq, 3: "accepted"}.

    Not a receipt: it is unsigned and says only that the batch is in the mempool.  The
    device keeps the batch until the signed commit receipt arrives.
    """
    return cbor.encode({1: admission.device_id, 2: admission.seq, 3: "accepted"})


def diagnostic(code: str, reason: str = "") -> bytes:
    """`code` first, then a short reason: UTF-8 text, at most DIAGNOSTIC_BYTES_MAX bytes."""
    text = code if not reason else code + " " + reason
    data = text.encode("utf-8", "replace")[:DIAGNOSTIC_BYTES_MAX]
    return data.decode("utf-8", "ignore").encode()


# CoAP response classes (RFC 7252 §5.9) for an error code.  First match wins, so exact
# codes come before their prefixes.
_COAP_CODES: tuple[tuple[str, str], ...] = (
    (CODE_TOO_LARGE, "4.13"),
    ("tx.limit", "4.13"),
    (CODE_CONTENT_FORMAT, "4.15"),
    (CODE_BUSY, "5.03"),
    ("mempool.full", "5.03"),
    (CODE_NODE, "5.00"),
    ("cert.revoked", "4.03"),
    ("cert.meter", "4.03"),
    ("cose.signature", "4.01"),
    ("cose.kid", "4.01"),
    ("cert.", "4.01"),
    ("cbor.", "4.00"),
    ("cose.", "4.00"),
    ("batch.", "4.00"),
    ("tx.", "4.00"),
)
# Replays and duplicates conflict with what the node already holds, whatever prefix
# the node files them under (rule.replay, mempool.duplicate, ...).
_CONFLICT_WORDS = ("replay", "duplicate")


def coap_code_for(code: str) -> str:
    """The CoAP response code ("4.00", ...) for a rejection code."""
    if any(word in code for word in _CONFLICT_WORDS):
        return "4.09"
    for prefix, coap_code in _COAP_CODES:
        if code == prefix or (prefix.endswith(".") and code.startswith(prefix)):
            return coap_code
    return "4.00"
