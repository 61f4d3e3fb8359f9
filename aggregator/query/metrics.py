"""Prometheus view of the query side's counters, for the node's own registry.

    gl_query_access_denied_total{role,action,code}   denials by access.enforce

The label space is bounded: roles (4 and "none"), actions (13) and denial codes (3).
Register one collector per node registry, e.g.
`net_metrics.registry.register(DenialCollector(denials))`; it reads the counter at
scrape time, so the access check itself never touches prometheus_client.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from .access import DenialCounter


class DenialCollector(Collector):
    def __init__(self, counter: DenialCounter) -> None:
        self._counter = counter

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("gl_query_access_denied", "Requests denied by the "
                                     "authorization matrix", labels=["role", "action", "code"])
        for (role, action, code), count in sorted(self._counter.counts().items()):
            family.add_metric([role, action, code], count)
        yield family
