"""CoAP (RFC 7252) transport: POST /gl/v1/up, GET /gl/v1/ack/{device} with Observe.

Theory of operation
-------------------
One aiocoap server context on UDP (the `udp6` transport, which also serves IPv4 through
mapped addresses).  aiocoap reassembles block-wise uploads (RFC 7959) before the
resource sees them, so a batch above one datagram arrives whole; a block that would
take the upload past `ports.MESSAGE_BYTES_MAX` (or a Size1 announcing more) is refused
with 4.13 and Size1 = the limit, since aiocoap's own reassembly has no size bound.

POST /gl/v1/up with Content-Format 18 (application/cose; cose-type="cose-sign1") goes to
`Ingress.submit` without waiting for a slot; the answer:

    accepted      2.04 Changed, payload `ports.acceptance_payload` (CBOR)
    rejected      4.xx from `ports.coap_code_for(code)`, diagnostic payload "<code> <reason>"
    overloaded    5.03 Service Unavailable, Max-Age = retry-after seconds (RFC 7252 §5.9.3.4)
    wrong format  4.15, diagnostic "net.content_format"

GET /gl/v1/ack/{device} answers 2.05 with the latest commit receipt of the device
(Content-Format 18) or 4.04 "net.no_receipt"; with Observe (RFC 7641) a new receipt is
notified to every observer of that device, and an observer of a device that has no
receipt yet gets 2.05 with an empty payload (an error would end the observation).

Two of aiocoap's per-request steps are skipped for uploads, as they cost a fifth of the
loop per request with nothing to show for it: `Site` deep-copies every request to strip
its path before routing (`_Site` hands a POST to /gl/v1/up to its resource as it is,
and routes everything else as aiocoap does), and `Context.render_to_pipe` names each
rendering task after `repr(request)`, which formats the peer's address (`_Context`
uses a fixed name).

aiocoap errors never leave this module: start-up failures become `TransportError`.

Limits
------
    OBSERVERS_MAX    10000   observations held at once (a few hundred bytes each);
                             beyond it a GET is served without registering.
"""

from __future__ import annotations

import logging

import aiocoap
import aiocoap.resource as resource
from aiocoap import numbers
from aiocoap.pipe import Pipe, error_to_message, run_driving_pipe

from edge.portable.errors import LocalProtocolError

from .ingress import Ingress, ReceiptHub
from .metrics import NetMetrics
from .ports import (
    CODE_CONTENT_FORMAT,
    CODE_TOO_LARGE,
    MESSAGE_BYTES_MAX,
    TRANSPORT_COAP,
    Admission,
    CommitReceipt,
    acceptance_payload,
    coap_code_for,
    diagnostic,
)

CONTENT_FORMAT_COSE_SIGN1 = 18
CONTENT_FORMAT_CBOR = 60
OBSERVERS_MAX = 10_000
UP_PATH = ("gl", "v1", "up")
ACK_PATH = ("gl", "v1", "ack")

log = logging.getLogger("gridledger.net")


class TransportError(LocalProtocolError):
    code = "net.transport"


def _code(text: str) -> numbers.codes.Code:
    major, minor = text.split(".")
    return numbers.codes.Code(int(major) * 32 + int(minor))


def response_for(admission: Admission) -> aiocoap.Message:
    if admission.outcome == "accepted":
        return aiocoap.Message(
            code=aiocoap.CHANGED,
            payload=acceptance_payload(admission),
            content_format=CONTENT_FORMAT_CBOR,
        )
    message = aiocoap.Message(
        code=_code(coap_code_for(admission.code)),
        payload=diagnostic(admission.code, admission.reason),
    )
    if admission.outcome == "overloaded":
        message.code = aiocoap.SERVICE_UNAVAILABLE
        message.opt.max_age = admission.retry_after_s
    return message


def over_limit(request: aiocoap.Message) -> bool:
    """True when a (block-wise) upload announces or reaches more than MESSAGE_BYTES_MAX."""
    if request.opt.size1 is not None and request.opt.size1 > MESSAGE_BYTES_MAX:
        return True
    block1 = request.opt.block1
    return block1 is not None and block1.start + len(request.payload) > MESSAGE_BYTES_MAX


class UpResource(resource.Resource):  # type: ignore[misc]  # aiocoap is untyped
    def __init__(self, ingress: Ingress) -> None:
        super().__init__()
        self._ingress = ingress

    async def needs_blockwise_assembly(self, request: aiocoap.Message) -> bool:
        # aiocoap reassembles Block1 uploads without a size bound; a block past the limit
        # comes to render_post unassembled instead, and is refused there.  A batch in one
        # datagram (no Block1/Block2 option, the usual case) skips aiocoap's block spool
        # and response cache: its answer is a few dozen bytes and there is nothing to
        # assemble, and that bookkeeping was a tenth of the loop's time per request.
        blockwise = request.opt.block1 is not None or request.opt.block2 is not None
        return blockwise and not over_limit(request)

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        if over_limit(request):
            admission = self._ingress.refuse(
                TRANSPORT_COAP, CODE_TOO_LARGE, f"over {MESSAGE_BYTES_MAX} bytes")
            response = response_for(admission)
            response.opt.size1 = MESSAGE_BYTES_MAX  # RFC 7959 §2.9.3
            return response
        if request.opt.content_format != CONTENT_FORMAT_COSE_SIGN1:
            admission = self._ingress.refuse(
                TRANSPORT_COAP, CODE_CONTENT_FORMAT, "use 18 (cose-sign1)")
            return response_for(admission)
        admission = await self._ingress.submit(bytes(request.payload), TRANSPORT_COAP, False)
        return response_for(admission)


class AckResource(resource.ObservableResource, resource.PathCapable):  # type: ignore[misc]
    """Serves /gl/v1/ack/{device}; observers are kept per device."""

    def __init__(self, hub: ReceiptHub, metrics: NetMetrics) -> None:
        super().__init__()
        self._hub = hub
        self._metrics = metrics
        self._watchers: dict[str, set[object]] = {}
        self._watching = 0
        hub.subscribe(self._on_receipt)

    @staticmethod
    def _device(request: aiocoap.Message) -> str | None:
        path = request.opt.uri_path
        return path[0] if len(path) == 1 and path[0] else None

    async def add_observation(self, request: aiocoap.Message, serverobservation: object) -> None:
        device = self._device(request)
        if device is None or self._watching >= OBSERVERS_MAX:
            return
        watchers = self._watchers.setdefault(device, set())
        watchers.add(serverobservation)
        self._watching += 1

        def cancel() -> None:
            watchers.discard(serverobservation)
            self._watching -= 1
            if not watchers:
                self._watchers.pop(device, None)

        serverobservation.accept(cancel)  # type: ignore[attr-defined]

    def _on_receipt(self, item: CommitReceipt) -> None:
        for observation in list(self._watchers.get(item.device_id, ())):
            observation.trigger()  # type: ignore[attr-defined]
            self._metrics.of(self._metrics.receipts_out, TRANSPORT_COAP).inc()

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        device = self._device(request)
        if device is None:
            return aiocoap.Message(code=aiocoap.NOT_FOUND, payload=diagnostic("net.path"))
        receipt = self._hub.latest(device)
        if receipt is None and request.opt.observe is not None:
            # An error would end the observation (RFC 7641 §3.2): an observer of a device
            # without receipts yet gets an empty 2.05 and the first receipt as notification.
            return aiocoap.Message(
                code=aiocoap.CONTENT, payload=b"", content_format=CONTENT_FORMAT_COSE_SIGN1
            )
        if receipt is None:
            return aiocoap.Message(code=aiocoap.NOT_FOUND, payload=diagnostic("net.no_receipt"))
        return aiocoap.Message(
            code=aiocoap.CONTENT, payload=receipt, content_format=CONTENT_FORMAT_COSE_SIGN1
        )


def _bound_port(context: aiocoap.Context) -> int:
    """The UDP port the server context listens on (the OS picks it for port 0)."""
    for interface in context.request_interfaces:
        messages = getattr(getattr(interface, "token_interface", None), "message_interface", None)
        transport = getattr(messages, "transport", None)
        if transport is not None:
            return int(transport.get_extra_info("socket").getsockname()[1])
    raise TransportError("aiocoap did not expose its UDP socket")


class _Site(resource.Site):  # type: ignore[misc]  # aiocoap is untyped
    """aiocoap's Site, with uploads routed to their resource without a copy."""

    def __init__(self, up: resource.Resource) -> None:
        super().__init__()
        self._up = up
        self.add_resource(UP_PATH, up)

    async def render_to_pipe(self, request: Pipe) -> None:
        options = request.request.opt
        if options.uri_path == UP_PATH and options.uri_path_abbrev is None:
            await self._up.render_to_pipe(request)
        else:
            await super().render_to_pipe(request)


class _Context(aiocoap.Context):  # type: ignore[misc]
    """aiocoap's Context, naming rendering tasks without formatting the request."""

    def render_to_pipe(self, pipe: Pipe) -> None:
        run_driving_pipe(error_to_message(pipe, self.log), self._render_to_pipe(pipe),
                         name="coap.render")


class CoapTransport:
    """The CoAP server; `port` is the bound port once started."""

    def __init__(
        self, host: str, port: int, ingress: Ingress, hub: ReceiptHub, metrics: NetMetrics
    ) -> None:
        self._host = host
        self.port = port
        self._site = _Site(UpResource(ingress))
        self._site.add_resource(ACK_PATH, AckResource(hub, metrics))
        self._context: aiocoap.Context | None = None

    async def start(self) -> None:
        try:
            self._context = await _Context.create_server_context(
                self._site, bind=(self._host, self.port), transports=["udp6"]
            )
        except OSError as exc:
            raise TransportError(f"CoAP cannot bind {self._host}:{self.port}: {exc}") from None
        self.port = _bound_port(self._context)
        log.info("coap.listening", extra={"fields": {"host": self._host, "port": self.port}})

    async def shutdown(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            await context.shutdown()
