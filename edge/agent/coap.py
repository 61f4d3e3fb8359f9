"""CoAP uplink: POST /gl/v1/up (Content-Format 18, confirmable), receipts by GET
/gl/v1/ack/{device}.

CoAP has no connection, so the link is "up" until a request fails: a transport error
or a 5.xx marks it down and the Sender's jittered backoff says when to try again (at
least the server's Max-Age after a 5.03, DESIGN.md's overload answer).  A 2.04 means the
node took the batch, not that it is committed: the batch stays queued until a receipt
for its seq, fetched from the ack resource after each round of sends and again while
anything is in flight.  A 4.xx answer is logged with its diagnostic payload and the
batch is left to the resend schedule (a receipt "rejected:..." is what ends it).
aiocoap's errors are mapped here and nowhere else.  A batch over 1 KiB goes block-wise
(RFC 7959), which aiocoap does by itself.

Limits: one request at a time; each request gives up after REQUEST_TIMEOUT_S (CoAP's
own retransmissions, RFC 7252 §4.8, fit well within it); receipts are fetched at most
every ACK_POLL_S while batches are in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections.abc import Callable

import aiocoap
from aiocoap.numbers.codes import Code

from edge.agent.logs import event
from edge.portable.agent import Sender
from edge.portable.errors import LocalProtocolError

CONTENT_FORMAT_COSE_SIGN1 = 18  # application/cose; cose-type="cose-sign1"
REQUEST_TIMEOUT_S = 30.0
ACK_POLL_S = 1.0
DEFAULT_PORT = 5683


class CoapDown(Exception):
    """The endpoint did not answer or is overloaded; `retry_after_s` from Max-Age."""

    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        Exception.__init__(self, message)
        self.retry_after_s = retry_after_s


def parse_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "coap" or not parts.hostname:
        raise LocalProtocolError(f"{url!r}: use coap://HOST[:PORT]", "config.invalid")
    return f"coap://{parts.hostname}:{parts.port or DEFAULT_PORT}"


class CoapUplink:
    def __init__(self, url: str, device_id: str, sender: Sender,
                 get_message: Callable[[int], bytes | None],
                 on_receipt: Callable[[bytes], None], log: logging.Logger) -> None:
        self.base = parse_url(url)
        self.device_id = device_id
        self.sender = sender
        self.get_message = get_message
        self.on_receipt = on_receipt
        self.log = log
        self.last_sent_seq = 0
        self._acked_at_s = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._context: aiocoap.Context | None = None
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def shutdown(self) -> None:
        self._stopping = True
        self.sender.connected = False  # what the last status file says
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        if self._context is not None:
            await self._context.shutdown()

    async def _run(self) -> None:
        self._context = await aiocoap.Context.create_client_context()
        while not self._stopping:
            wait_s = self.sender.link.ready_at_s - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            if not self.sender.connected:
                self.sender.link_up()
                event(self.log, "coap_up", endpoint=self.base)
            try:
                await self._round()
            except Exception as exc:  # CoapDown, or a bug: delivery must go on either way
                if not isinstance(exc, CoapDown):
                    self.log.exception("uplink_fault", extra={"fields": {"uplink": "coap"}})
                    exc = CoapDown(repr(exc))
                retry_at_s = self.sender.link_down(time.monotonic())
                self.sender.link.ready_at_s = max(retry_at_s,
                                                  time.monotonic() + exc.retry_after_s)
                event(self.log, "coap_down", logging.WARNING, error=str(exc),
                      retry_in_s=round(self.sender.link.ready_at_s - time.monotonic(), 2))
                continue
            await self._wait()

    async def _round(self) -> None:
        sent = 0
        for seq in self.sender.due(time.monotonic()):
            message = self.get_message(seq)
            if message is None:
                self.sender.forget(seq)
                continue
            await self._post(seq, message)
            self.sender.sent(seq, time.monotonic())
            self.last_sent_seq = max(self.last_sent_seq, seq)
            sent += 1
        if self.sender.in_flight and (sent or time.monotonic() - self._acked_at_s >= ACK_POLL_S):
            await self._fetch_receipt()

    async def _request(self, code: Code, path: str, payload: bytes = b"") -> aiocoap.Message:
        assert self._context is not None
        request = aiocoap.Message(code=code, uri=self.base + path, payload=payload,
                                  mtype=aiocoap.CON)
        if code == aiocoap.POST:
            request.opt.content_format = CONTENT_FORMAT_COSE_SIGN1
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                response: aiocoap.Message = await self._context.request(request).response
        except (aiocoap.error.Error, OSError, TimeoutError) as exc:
            raise CoapDown(f"{path}: {exc.__class__.__name__} {exc}") from None
        if response.code.class_ == 5:
            raise CoapDown(f"{path}: {response.code}", float(response.opt.max_age or 0))
        return response

    async def _post(self, seq: int, message: bytes) -> None:
        response = await self._request(aiocoap.POST, "/gl/v1/up", message)
        if not response.code.is_successful():
            event(self.log, "coap_refused", logging.WARNING, seq=seq, code=str(response.code),
                  diagnostic=response.payload[:80].decode("utf-8", "replace"))

    async def _fetch_receipt(self) -> None:
        self._acked_at_s = time.monotonic()
        response = await self._request(aiocoap.GET, f"/gl/v1/ack/{self.device_id}")
        if response.code == aiocoap.CONTENT and response.payload:
            self.on_receipt(response.payload)

    async def _wait(self) -> None:
        self._wake.clear()
        deadline_s = self.sender.next_deadline()
        if self.sender.in_flight:
            deadline_s = min(deadline_s, self._acked_at_s + ACK_POLL_S)
        timeout_s = min(1.0, max(0.0, deadline_s - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._wake.wait()
