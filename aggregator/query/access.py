"""Who may do what: a pure decision over (principal, action, resource).

Theory of operation
-------------------
`authorize` looks up the rule for (action, role) in `RULES` and applies it to the
resource, which names the meters and devices a request touches (the server fills them
in from the ledger: a meter's readings come with the devices that report for it, a
receipt with the meters of its batch).  It reads no clock, store or global state.

Rules:
    ALL          the role may, for any resource
    NEVER        the role may not (code access.role)
    METERS_ALL   every meter of the resource is one of the principal's (and there is one)
    METERS_ANY   some meter of the resource is one of the principal's
    DEVICES_ALL  every device of the resource is one of the principal's (and there is one)
    DEVICES_ANY  some device of the resource is one of the principal's

A failed ownership rule answers access.not_owner (HTTP 403), no principal at all
access.unauthenticated (401).  `enforce` is `authorize` plus counting each denial in a
`DenialCounter`, which the server exposes on /metrics.  List endpoints filter their rows
with `authorize` (not `enforce`): rows a principal does not see are not attempts.

Chain status, block headers, commits and consistency proofs are class I data without
personal content, so every authenticated principal may read them; whole blocks carry
every meter's readings and are for auditors and operators only.  The full table, with
its reasons, is in docs/query-access.md and in tests/query/test_access.py.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum

from .accounts import ROLES, Principal


class Action(StrEnum):
    CHAIN_READ = "chain.read"              # status, headers, commits, consistency proofs
    BLOCK_READ = "block.read"              # whole blocks with their transactions
    READINGS_READ = "readings.read"        # readings of one meter
    RECEIPT_READ = "receipt.read"          # receipt of one batch (device, seq)
    DEVICE_READ = "device.read"            # device status
    VIOLATIONS_READ = "violations.read"    # violations of a device
    CREDIT_READ = "credit.read"            # credit score of a device
    CUSTOMER_READ = "customer.read"        # class II fields of a meter's customer
    CUSTOMER_WRITE = "customer.write"      # write them (sealed) and their digest on chain
    DOCUMENT_READ = "document.read"        # class III documents and their records
    DOCUMENT_UPLOAD = "document.upload"
    DEVICE_ENROLL = "device.enroll"
    DEVICE_REVOKE = "device.revoke"
    ACCOUNTS_MANAGE = "accounts.manage"


class Rule(StrEnum):
    ALL = "all"
    NEVER = "never"
    METERS_ALL = "own meters (all)"
    METERS_ANY = "own meters (any)"
    DEVICES_ALL = "own devices (all)"
    DEVICES_ANY = "own devices (any)"


@dataclass(frozen=True)
class Resource:
    """The meters and devices a request touches; empty for chain-wide actions."""

    meters: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()

    @classmethod
    def meter(cls, serial: str, devices: frozenset[str] = frozenset()) -> Resource:
        """A meter, with the devices the ledger says report for it."""
        return cls(frozenset({serial}), devices)

    @classmethod
    def device(cls, device_id: str, meters: frozenset[str] = frozenset()) -> Resource:
        """A device, with the meters its certificate names."""
        return cls(meters, frozenset({device_id}))


NONE = Resource()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    code: str       # "ok", access.unauthenticated, access.role or access.not_owner
    reason: str


_A, _N = Rule.ALL, Rule.NEVER
_DEVICE_SCOPED = {"resident": Rule.METERS_ANY, "supplier": Rule.DEVICES_ANY,
                  "auditor": _A, "operator": _A}
_OPERATOR_ONLY = {"resident": _N, "supplier": _N, "auditor": _N, "operator": _A}

RULES: dict[Action, dict[str, Rule]] = {
    Action.CHAIN_READ: {"resident": _A, "supplier": _A, "auditor": _A, "operator": _A},
    Action.BLOCK_READ: {"resident": _N, "supplier": _N, "auditor": _A, "operator": _A},
    Action.READINGS_READ: {"resident": Rule.METERS_ALL, "supplier": Rule.DEVICES_ANY,
                           "auditor": _A, "operator": _A},
    # A batch may carry several households' meters: a resident sees it only if all are theirs.
    Action.RECEIPT_READ: {"resident": Rule.METERS_ALL, "supplier": Rule.DEVICES_ALL,
                          "auditor": _A, "operator": _A},
    Action.DEVICE_READ: _DEVICE_SCOPED,
    Action.VIOLATIONS_READ: _DEVICE_SCOPED,
    Action.CREDIT_READ: _DEVICE_SCOPED,
    Action.CUSTOMER_READ: {"resident": Rule.METERS_ALL, "supplier": Rule.DEVICES_ANY,
                           "auditor": _A, "operator": _A},
    Action.DOCUMENT_READ: {"resident": _A, "supplier": _A, "auditor": _A, "operator": _A},
    Action.DOCUMENT_UPLOAD: _OPERATOR_ONLY,
    Action.CUSTOMER_WRITE: _OPERATOR_ONLY,
    Action.DEVICE_ENROLL: _OPERATOR_ONLY,
    Action.DEVICE_REVOKE: _OPERATOR_ONLY,
    Action.ACCOUNTS_MANAGE: _OPERATOR_ONLY,
}

_ALLOWED = Decision(True, "ok", "allowed")


def _owns(rule: Rule, principal: Principal, resource: Resource) -> bool:
    if rule in (Rule.METERS_ALL, Rule.METERS_ANY):
        mine, theirs = principal.meters, resource.meters
    else:
        mine, theirs = principal.devices, resource.devices
    if rule in (Rule.METERS_ALL, Rule.DEVICES_ALL):
        return bool(theirs) and theirs <= mine
    return bool(theirs & mine)


def authorize(principal: Principal | None, action: Action, resource: Resource) -> Decision:
    """May `principal` perform `action` on `resource`?  Pure."""
    if principal is None:
        return Decision(False, "access.unauthenticated", "no valid access token")
    rule = RULES[action].get(principal.role, Rule.NEVER)
    if rule is Rule.ALL:
        return _ALLOWED
    if rule is Rule.NEVER:
        return Decision(False, "access.role", f"a {principal.role} may not {action.value}")
    if _owns(rule, principal, resource):
        return _ALLOWED
    return Decision(False, "access.not_owner", f"{action.value}: not among your {rule.value}")


class DenialCounter:
    """Denied attempts by (role, action, code); bounded by those three finite sets."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}

    def record(self, principal: Principal | None, action: Action, decision: Decision) -> None:
        if decision.allowed:
            return
        role = principal.role if principal is not None and principal.role in ROLES else "none"
        key = (role, action.value, decision.code)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def counts(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._counts)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


def enforce(principal: Principal | None, action: Action, resource: Resource,
            counter: DenialCounter) -> Decision:
    """`authorize`, counting a denial."""
    decision = authorize(principal, action, resource)
    counter.record(principal, action, decision)
    return decision
