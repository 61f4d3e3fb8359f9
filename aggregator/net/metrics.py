"""Prometheus metrics of the network shell, in a registry of their own.

Each `NodeServer` owns a `NetMetrics` (not the process-global registry), so two nodes in
one process (tests, the demo) count separately.

    gl_net_messages_in_total{transport}         messages received, before any check
    gl_net_admissions_total{transport,outcome}  accepted | rejected | overloaded
    gl_net_rejects_total{transport,code}        rejections by stable error code
    gl_net_receipts_out_total{transport}        receipts published (mqtt) or notified (coap)
    gl_net_queue_depth{queue}                   ingress_coap, ingress_mqtt: messages in
                                                flight to the node; mqtt_outbox: receipts
                                                waiting for the broker
    gl_net_mqtt_connected                       1 while connected to the broker

`of(metric, *labels)` keeps each labelled child once it is made; the children are as few
as the label values (transports, outcomes, queues, REJECT_CODES_MAX codes).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

# Distinct reject codes are few (the error tree); a cap keeps a buggy node from blowing
# up the label space with made-up codes.
REJECT_CODES_MAX = 64
OTHER_CODE = "other"


class NetMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages_in = Counter(
            "gl_net_messages_in", "Messages received", ["transport"], registry=r
        )
        self.admissions = Counter(
            "gl_net_admissions", "Node answers", ["transport", "outcome"], registry=r
        )
        self.rejects = Counter(
            "gl_net_rejects", "Rejections by error code", ["transport", "code"], registry=r
        )
        self.receipts_out = Counter(
            "gl_net_receipts_out", "Receipts sent", ["transport"], registry=r
        )
        self.queue_depth = Gauge("gl_net_queue_depth", "Queue depth", ["queue"], registry=r)
        self.mqtt_connected = Gauge("gl_net_mqtt_connected", "1 when connected", registry=r)
        self._codes: set[str] = set()
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    def of(self, metric: Counter | Gauge, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: prometheus_client takes a lock and
        builds the label tuple on every `labels` call, several times per message."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def reject(self, transport: str, code: str) -> None:
        if code not in self._codes and len(self._codes) >= REJECT_CODES_MAX:
            code = OTHER_CODE
        self._codes.add(code)
        self.of(self.rejects, transport, code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
