"""Denials show up on a node's Prometheus registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from aggregator.query.access import Action, DenialCounter, Resource, enforce
from aggregator.query.accounts import Principal
from aggregator.query.metrics import DenialCollector


def test_denials_exported() -> None:
    counter = DenialCounter()
    registry = CollectorRegistry()
    registry.register(DenialCollector(counter))
    assert b"gl_query_access_denied_total{" not in generate_latest(registry)
    resident = Principal("alice", "resident", meters=frozenset({"M1"}))
    for _ in range(3):
        enforce(resident, Action.READINGS_READ, Resource.meter("M9"), counter)
    text = generate_latest(registry).decode()
    assert ('gl_query_access_denied_total{action="readings.read",code="access.not_owner",'
            'role="resident"} 3.0') in text
