"""HTTP: GET /v1/status, GET /v1/blocks/{height} and Prometheus GET /metrics, FastAPI
served by uvicorn in our loop.

FastAPI gives the OpenAPI document at /openapi.json that the query API builds on.
uvicorn runs as a task of the node's event loop on a socket we bind ourselves (so port 0
works and the bound port is known before serving); its own signal handling is switched
off, because `NodeServer` owns SIGTERM and SIGINT.

`mount(app)`, when given, adds routes before these (the query API of
`aggregator.query.api`); a path it serves is not added again here.

The node's handlers are `async def` on purpose: FastAPI runs a plain `def` handler in a
worker thread, but the node (its engine, mempool and SQLite connection) belongs to the
event loop, and a block being cut must never be read half-way.  On the loop a handler
runs between two steps of the block task, never during one.

POST /v1/registry takes one registry transaction (`application/cbor`, as `aggregator.tx`
encodes it: an enrollment or revocation the registrar signed, which `gridledger certs
enroll/revoke --node` sends, or a document or customer record a validator or the
registrar signed, which `gridledger customers set` sends): 202 when admitted to the
mempool, the rejection code otherwise.  The signature is its authority, so the route
needs no login.

Errors are JSON `{"error": code, "detail": text}`:

    400  http.height      the height is not a decimal integer of at most 19 digits
    404  http.no_block    no committed block at that height
    413  http.too_large   a registry transaction over REGISTRY_BYTES_MAX
    4xx  tx.* / registry.* / cert.* ...  a registry transaction the node refused
    503  mempool.full     with Retry-After

Limits
------
    CONNECTIONS_MAX   64    concurrent HTTP connections (operators and Prometheus, not
                            devices); uvicorn answers 503 beyond it.
    SHUTDOWN_S        5     time given to open requests at shutdown.
    STARTUP_S         10    uvicorn start-up (it binds nothing: the socket is ours).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from .coap import TransportError
from .metrics import NetMetrics
from .ports import Admission

CONNECTIONS_MAX = 64
# A registry transaction carries one certificate (<= 1 KiB) and a profile map.
REGISTRY_BYTES_MAX = 8192
SHUTDOWN_S = 5
STARTUP_S = 10
# 19 digits hold every SQLite integer (< 2**63); a longer "height" is not one.
HEIGHT_DIGITS_MAX = 19
CODE_HEIGHT = "http.height"
CODE_NO_BLOCK = "http.no_block"
CODE_TOO_LARGE = "http.too_large"

log = logging.getLogger("gridledger.net")


def _error(status_code: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status_code)


def parse_height(text: str) -> int | None:
    """A block height from a URL segment: ASCII digits only, at most HEIGHT_DIGITS_MAX."""
    if not (0 < len(text) <= HEIGHT_DIGITS_MAX and text.isascii() and text.isdigit()):
        return None
    return int(text)


def make_app(
    status: Callable[[], dict[str, object]],
    metrics: NetMetrics,
    block: Callable[[int], dict[str, object] | None] | None = None,
    registry: Callable[[bytes], Admission] | None = None,
    mount: Callable[[FastAPI], None] | None = None,
) -> FastAPI:
    app = FastAPI(title="GridLedger aggregator node", version="1")
    if mount is not None:  # first, so its routes win (the query API guards /v1/blocks)
        mount(app)

    @app.get("/v1/status")
    async def get_status() -> JSONResponse:
        return JSONResponse(status())

    async def get_block(height: str) -> JSONResponse:
        number = parse_height(height)
        if number is None:
            return _error(400, CODE_HEIGHT, "height must be a non-negative decimal integer")
        found = None if block is None else block(number)
        if found is None:
            return _error(404, CODE_NO_BLOCK, f"no committed block at height {number}")
        return JSONResponse(found)

    if not _has_route(app, "/v1/blocks/{height}"):
        app.get("/v1/blocks/{height}")(get_block)

    @app.post("/v1/registry", status_code=202)
    async def post_registry(request: Request) -> JSONResponse:
        body = await _bounded_body(request, REGISTRY_BYTES_MAX)
        if body is None:
            return _error(413, CODE_TOO_LARGE, f"at most {REGISTRY_BYTES_MAX} bytes")
        if registry is None:
            return _error(404, "http.no_registry", "this node takes no registry transactions")
        return _registry_answer(registry(body))

    @app.get("/metrics")
    def get_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def _has_route(app: FastAPI, path: str) -> bool:
    return any(getattr(route, "path", None) == path for route in app.routes)


async def _bounded_body(request: Request, limit_bytes: int) -> bytes | None:
    """The request body, or None once it grows past `limit_bytes` (read no further)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _registry_answer(admission: Admission) -> JSONResponse:
    if admission.outcome == "accepted":
        return JSONResponse({"status": "accepted"}, status_code=202)
    if admission.outcome == "overloaded":
        answer = _error(503, admission.code, admission.reason)
        answer.headers["Retry-After"] = str(admission.retry_after_s)
        return answer
    status_code = 409 if "duplicate" in admission.code else 400
    return _error(status_code, admission.code, admission.reason)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # NodeServer handles signals for the whole node


class HttpTransport:
    def __init__(self, host: str, port: int, app: FastAPI) -> None:
        self.host = host
        self.port = port
        self._app = app
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    async def start(self) -> None:
        try:
            sock = socket.create_server((self.host, self.port), reuse_port=False)
        except OSError as exc:
            raise TransportError(f"HTTP cannot bind {self.host}:{self.port}: {exc}") from None
        # uvicorn writes a response's head and body separately; with Nagle on, the body
        # waits for the client's delayed ACK (40 ms a request).  Accepted sockets inherit it.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._app, lifespan="off", log_config=None, access_log=False,
            limit_concurrency=CONNECTIONS_MAX, timeout_graceful_shutdown=SHUTDOWN_S,
        )
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve([sock]))
        deadline = asyncio.get_running_loop().time() + STARTUP_S
        while not self._server.started:  # uvicorn has no start-up event to wait on
            if self._task.done():
                self._task.result()
                raise TransportError("HTTP server stopped during start-up")
            if asyncio.get_running_loop().time() > deadline:
                await self.shutdown()
                raise TransportError(f"HTTP server not started after {STARTUP_S} s")
            await asyncio.sleep(0.01)
        log.info("http.listening", extra={"fields": {"host": self.host, "port": self.port}})

    async def shutdown(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = None
            self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
