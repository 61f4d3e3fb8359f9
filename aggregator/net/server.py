"""NodeServer: CoAP, MQTT and HTTP around one node, in one event loop.

Theory of operation
-------------------
`start()` builds the shared parts (metrics, `Ingress`, `ReceiptHub`), starts the embedded
MQTT broker when no broker URL is configured, then CoAP, HTTP and MQTT, and finally the
task that pumps the node's receipts to the hub.  `shutdown()` stops them in reverse
order; both are safe to call once each.  `run_until_signalled()` is the process shape
(as aiocoap's util/cli.py): SIGTERM and SIGINT set an event, the server shuts down
cleanly and the call returns.

Configured port 0 means "any free port"; after `start()`, `ports` holds the bound ones.
Log lines are JSON objects (`JsonFormatter`), one per line: {"ts", "level", "logger",
"event", ...fields}.

Error codes and limits are in `ports`, `ingress`, `coap`, `mqtt` and `http`; the whole
picture is docs/aggregator-net.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from edge.portable.errors import LocalProtocolError

from .coap import CoapTransport
from .http import HttpTransport, make_app
from .ingress import INFLIGHT_COAP_MAX, INFLIGHT_MQTT_MAX, Ingress, ReceiptHub
from .metrics import NetMetrics
from .mqtt import EMBEDDED_CONNECT_S, EmbeddedBroker, MqttSettings, MqttTransport
from .ports import TRANSPORT_COAP, TRANSPORT_MQTT, Node, block_lookup, registry_submitter

DEFAULT_MQTT_PORT = 1883
PUMP_RETRY_S = 1.0   # pause before asking a failed receipts iterator again
log = logging.getLogger("gridledger.net")


class ConfigError(LocalProtocolError):
    code = "net.config"


@dataclass(frozen=True)
class NetConfig:
    node_id: str = "node-0"
    coap_host: str = "127.0.0.1"
    coap_port: int = 5683
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    mqtt_url: str | None = None          # mqtt://host[:port]; None: embedded broker
    embedded_mqtt_host: str = "127.0.0.1"
    embedded_mqtt_port: int = DEFAULT_MQTT_PORT
    shared_group: str = "gl-aggregators"
    seed: int | None = None              # reconnect jitter; None: from the OS


def parse_mqtt_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise ConfigError(f"MQTT URL must be mqtt://host[:port], got {url!r}")
    try:
        port = parts.port or DEFAULT_MQTT_PORT
    except ValueError:
        raise ConfigError(f"MQTT URL has a bad port: {url!r}") from None
    return parts.hostname, port


Mount = Callable[[FastAPI, CollectorRegistry], None]


class NodeServer:
    def __init__(self, node: Node, config: NetConfig | None = None,
                 mount: Mount | None = None) -> None:
        self.node = node
        self.config = config or NetConfig()
        self._mount = mount   # more HTTP routes (the query API), with the metrics registry
        self.metrics = NetMetrics()
        self.hub = ReceiptHub()
        self.ingress = Ingress(node, self.metrics, {
            TRANSPORT_COAP: INFLIGHT_COAP_MAX, TRANSPORT_MQTT: INFLIGHT_MQTT_MAX})
        self.broker: EmbeddedBroker | None = None
        self.coap: CoapTransport | None = None
        self.http: HttpTransport | None = None
        self.mqtt: MqttTransport | None = None
        self._pump: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def ports(self) -> dict[str, int]:
        found = {"coap": self.coap, "http": self.http}
        ports = {name: t.port for name, t in found.items() if t is not None}
        if self.mqtt is not None:
            ports["mqtt"] = self.mqtt.settings.port
        return ports

    async def start(self) -> None:
        c = self.config
        try:
            await self._start_mqtt_broker()
            self.coap = CoapTransport(c.coap_host, c.coap_port, self.ingress, self.hub,
                                      self.metrics)
            await self.coap.start()
            self.http = HttpTransport(c.http_host, c.http_port,
                                      make_app(self.node.status, self.metrics,
                                               block_lookup(self.node),
                                               registry_submitter(self.node),
                                               self._http_mount()))
            await self.http.start()
            self.mqtt = MqttTransport(self._mqtt_settings(), self.ingress, self.hub,
                                      self.metrics, random.Random(c.seed))
            await self.mqtt.start()
            if self.broker is not None:
                # The embedded broker is ours and local: be subscribed before "ready".
                await asyncio.wait_for(self.mqtt.connected.wait(), EMBEDDED_CONNECT_S)
        except BaseException:
            await self.shutdown()
            raise
        self._pump = asyncio.get_running_loop().create_task(self._pump_receipts())
        log.info("node.ready", extra={"fields": {"node": c.node_id, **self.ports}})

    def _http_mount(self) -> Callable[[FastAPI], None] | None:
        if self._mount is None:
            return None
        mount, registry = self._mount, self.metrics.registry
        return lambda app: mount(app, registry)

    async def _pump_receipts(self) -> None:
        """Keep receipts flowing: a node whose iterator fails or ends is asked again."""
        while True:
            try:
                await self.hub.pump(self.node)
                log.warning("receipts.ended")
            except Exception:
                log.exception("receipts.failed")
            await asyncio.sleep(PUMP_RETRY_S)

    async def _start_mqtt_broker(self) -> None:
        if self.config.mqtt_url is not None:
            return
        self.broker = EmbeddedBroker(self.config.embedded_mqtt_host,
                                     self.config.embedded_mqtt_port)
        await self.broker.start()

    def _mqtt_settings(self) -> MqttSettings:
        c = self.config
        client_id = f"gl-{c.node_id}-{random.Random(c.seed).getrandbits(32):08x}"
        if self.broker is not None:
            return MqttSettings(self.broker.host, self.broker.port, client_id, mqtt5=False)
        assert c.mqtt_url is not None
        host, port = parse_mqtt_url(c.mqtt_url)
        return MqttSettings(host, port, client_id, mqtt5=True, shared_group=c.shared_group)

    async def shutdown(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._pump = None
        for transport in (self.mqtt, self.coap, self.http, self.broker):
            if transport is not None:
                await transport.shutdown()
        self.mqtt = self.coap = self.http = None
        self.broker = None
        log.info("node.stopped", extra={"fields": {"node": self.config.node_id}})

    def stop(self) -> None:
        """Ask `run_until_signalled` to shut down (what SIGTERM and SIGINT do)."""
        self._stopping.set()

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, self.stop)
        try:
            await self.start()
            await self._stopping.wait()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            await self.shutdown()


# -- logging -----------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line; structured fields come from `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["error"] = "".join(traceback.format_exception(*record.exc_info)).strip()
        return json.dumps(line, default=str)


def configure_json_logging(level: int = logging.INFO, path: Path | None = None) -> None:
    """JSON lines on stderr, or appended to `path` (the demo keeps its terminal)."""
    handler = logging.StreamHandler(sys.stderr) if path is None else logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party libraries log every packet at INFO; keep their warnings only.
    for name in ("amqtt", "transitions", "coap-server", "coap", "uvicorn"):
        logging.getLogger(name).setLevel(logging.WARNING)


# -- a shell around the in-memory node (manual runs and the signal test) ------------------


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


async def _run_twin(args: argparse.Namespace) -> None:
    from certs.registrar import registrar_public_key
    from edge import crypto

    from .twin import TwinNode

    node = TwinNode(registrar_public_key(Path(args.registrar)), crypto.SigningKey.generate())
    coap_host, coap_port = host_port(args.coap)
    http_host, http_port = host_port(args.http)
    mqtt_host, mqtt_port = host_port(args.embedded_mqtt)
    config = NetConfig(coap_host=coap_host, coap_port=coap_port, http_host=http_host,
                       http_port=http_port, mqtt_url=args.mqtt_url,
                       embedded_mqtt_host=mqtt_host, embedded_mqtt_port=mqtt_port)
    await node.start()
    try:
        await NodeServer(node, config).run_until_signalled()
    finally:
        await node.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The network shell around the in-memory node")
    parser.add_argument("--registrar", required=True, help="registrar directory (registrar.pub)")
    parser.add_argument("--coap", default="127.0.0.1:5683")
    parser.add_argument("--http", default="127.0.0.1:8080")
    parser.add_argument("--mqtt-url", default=None)
    parser.add_argument("--embedded-mqtt", default="127.0.0.1:1883")
    args = parser.parse_args(argv)
    configure_json_logging()
    asyncio.run(_run_twin(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
