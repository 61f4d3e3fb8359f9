"""The authorization matrix: every role against every action, on its own, a mixed and a
foreign resource, with the expected decisions written out."""

from __future__ import annotations

import pytest

from aggregator.query.access import (
    RULES,
    Action,
    DenialCounter,
    Resource,
    authorize,
    enforce,
)
from aggregator.query.accounts import Principal

RESIDENT = Principal("alice", "resident", meters=frozenset({"M1", "M2"}))
SUPPLIER = Principal("sup", "supplier", devices=frozenset({"gw-1", "gw-2"}))
AUDITOR = Principal("aud", "auditor")
OPERATOR = Principal("op", "operator")

# "own": meter M1 (alice's) reported by gw-1 (sup's); "mixed": also a stranger's meter and
# device, as in a batch of a gateway that reads several households; "other": none of theirs.
OWN = Resource(frozenset({"M1"}), frozenset({"gw-1"}))
MIXED = Resource(frozenset({"M1", "M9"}), frozenset({"gw-1", "gw-9"}))
OTHER = Resource(frozenset({"M9"}), frozenset({"gw-9"}))
RESOURCES = (OWN, MIXED, OTHER)

# Y allowed, R access.role, O access.not_owner, U access.unauthenticated.
# Columns: resident own/mixed/other, supplier own/mixed/other, auditor own/mixed/other,
# operator own/mixed/other, no principal.
MATRIX = """
chain.read        YYY YYY YYY YYY U
block.read        RRR RRR YYY YYY U
readings.read     YOO YYO YYY YYY U
receipt.read      YOO YOO YYY YYY U
device.read       YYO YYO YYY YYY U
violations.read   YYO YYO YYY YYY U
credit.read       YYO YYO YYY YYY U
customer.read     YOO YYO YYY YYY U
customer.write    RRR RRR RRR YYY U
document.read     YYY YYY YYY YYY U
document.upload   RRR RRR RRR YYY U
device.enroll     RRR RRR RRR YYY U
device.revoke     RRR RRR RRR YYY U
accounts.manage   RRR RRR RRR YYY U
"""

CODES = {"Y": "ok", "R": "access.role", "O": "access.not_owner", "U": "access.unauthenticated"}


def expected_rows() -> list[tuple[Action, str]]:
    rows = []
    for line in MATRIX.strip().splitlines():
        action, *groups = line.split()
        rows.append((Action(action), "".join(groups)))
    return rows


def test_matrix_covers_every_action() -> None:
    assert {action for action, _ in expected_rows()} == set(Action) == set(RULES)


@pytest.mark.parametrize(("action", "letters"), expected_rows(), ids=lambda v: str(v))
def test_matrix(action: Action, letters: str) -> None:
    cells = [(p, r) for p in (RESIDENT, SUPPLIER, AUDITOR, OPERATOR) for r in RESOURCES]
    cells.append((None, OWN))
    assert len(letters) == len(cells)
    for (principal, resource), letter in zip(cells, letters, strict=True):
        decision = authorize(principal, action, resource)
        who = principal.role if principal else "anonymous"
        assert decision.code == CODES[letter], (who, action, resource)
        assert decision.allowed == (letter == "Y")


def test_empty_resource_is_never_owned() -> None:
    empty = Resource()
    assert not authorize(RESIDENT, Action.READINGS_READ, empty).allowed
    assert not authorize(SUPPLIER, Action.RECEIPT_READ, empty).allowed


def test_unknown_role_gets_nothing() -> None:
    stranger = Principal("x", "admin")
    assert all(authorize(stranger, a, OWN).code == "access.role" for a in Action)


def test_resource_constructors() -> None:
    assert Resource.meter("M1", frozenset({"gw-1"})) == OWN
    assert Resource.device("gw-1", frozenset({"M1"})) == OWN


def test_denials_are_counted_by_role_action_and_code() -> None:
    counter = DenialCounter()
    assert enforce(RESIDENT, Action.READINGS_READ, OWN, counter).allowed
    enforce(RESIDENT, Action.READINGS_READ, OTHER, counter)
    enforce(RESIDENT, Action.READINGS_READ, OTHER, counter)
    enforce(SUPPLIER, Action.DEVICE_ENROLL, OWN, counter)
    enforce(None, Action.CHAIN_READ, OWN, counter)
    assert counter.counts() == {
        ("resident", "readings.read", "access.not_owner"): 2,
        ("supplier", "device.enroll", "access.role"): 1,
        ("none", "chain.read", "access.unauthenticated"): 1,
    }
    assert counter.total() == 4
