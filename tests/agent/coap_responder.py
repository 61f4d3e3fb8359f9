"""The CoAP side of the test responder: POST /gl/v1/up -> 2.04, GET /gl/v1/ack/{device}
-> a receipt for the device's latest batches (DESIGN.md, Transport)."""

from __future__ import annotations

import asyncio

import aiocoap
from aiocoap import resource

from edge.portable import receipt
from tests.agent.responder import Responder

COSE_SIGN1 = 18


class Up(resource.Resource):  # type: ignore[misc]
    def __init__(self, responder: Responder) -> None:
        super().__init__()
        self.responder = responder

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        if request.opt.content_format != COSE_SIGN1:
            return aiocoap.Message(code=aiocoap.UNSUPPORTED_CONTENT_FORMAT)
        if self.responder.accept(request.payload, "coap") is None:
            return aiocoap.Message(code=aiocoap.BAD_REQUEST, payload=b"batch does not verify")
        return aiocoap.Message(code=aiocoap.CHANGED)


class Ack(resource.Resource, resource.PathCapable):  # type: ignore[misc]
    def __init__(self, responder: Responder) -> None:
        super().__init__()
        self.responder = responder

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        path = request.opt.uri_path
        seqs = self.responder.recent.get(path[0], []) if len(path) == 1 else []
        if not seqs:
            return aiocoap.Message(code=aiocoap.NOT_FOUND)
        entries = [receipt.committed(seq, self.responder.height) for seq in seqs]
        return aiocoap.Message(code=aiocoap.CONTENT, content_format=COSE_SIGN1,
                               payload=self.responder.receipt_for(path[0], entries))


async def serve_coap(responder: Responder, port: int) -> None:
    site = resource.Site()
    site.add_resource(["gl", "v1", "up"], Up(responder))
    site.add_resource(["gl", "v1", "ack"], Ack(responder))
    context = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
    print("coap ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await context.shutdown()
