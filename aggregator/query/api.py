"""The query API of a node: routes added to the node's FastAPI app.

Theory of operation
-------------------
`QueryApi` holds what the routes need (the read side of the ledger, the reading index,
accounts, tokens, rate limits, access rules, class II and class III stores) and
`mount(app, registry)` adds its routes to the node's app (`aggregator.net.http.make_app`
calls it before adding its own and skips a path already served, so `/v1/blocks/{height}`
is this one, which needs a token).  FastAPI describes every route in /openapi.json.

Every request but `POST /v1/auth/token` carries `Authorization: Bearer <token>`; the
token is verified (`tokens.TokenVerifier`: any validator of the chain may have issued
it), and the action is checked against the resource the request touches with
`access.enforce`, which counts each denial.  List endpoints show only the rows the
principal may see (`access.authorize`, not counted).

Class III: `POST /v1/documents` stores the file and submits a document record (tx kind 4)
signed by this node's key; the chain decides, and `GET /v1/documents/{digest}/record`
shows the record once a block committed it (the query index reads it from the block).
Class II: `PUT /v1/meters/{meter}/customer` seals the fields (AES-GCM, new salt) and
submits the salted digest (tx kind 5) signed by this node; the sealed row is written only
when the mempool admitted the tx.  `GET .../customer` shows the fields, the salt, their
digest and the digest on chain, so an entitled reader can compare the two.  A reading's
`verification_lapsed` is the chain's rule.verification result for its batch and meter.

Handlers are coroutines: they run on the node's event loop between two steps of the
block task and see a block wholly or not at all.  The two scrypt calls (login, account
creation, ~0.1 s of one core each) run in a worker thread so the loop keeps serving.

Tabular answers take `?format=json|csv|tablejson` (`tablejson.render`); receipts and
consistency proofs take `?format=signjson` for a SignJson object signed by this node.

Errors are JSON `{"error": code, "detail": text}`, counted by code in
`gl_query_errors_total{code}`; nothing a client sends makes a 500:

    400  http.invalid        a parameter or body does not match the OpenAPI schema
    400  query.range         from > to, a size beyond the log
    400  query.tx_kind       an enrollment sent to the revocation route or vice versa
    400  document.record, confidential.invalid   a document's fields or customer fields
                             that cannot be recorded
    401  access.unauthenticated, token.*, auth.credentials
    403  access.role, access.not_owner
    404  query.not_found, document.not_found, customer.not_found, account.unknown,
         query.no_registry (a node that takes no chain transactions), customer.no_store
         (a node without a customer key file), http.not_found (no such route)
    405  http.method
    413  http.too_large (login, account, registry, customer or document body),
         document.limit
    4xx  tx.* and the other codes of a chain transaction the node refused (document
         upload, customer write: the node signs the record, the mempool admits it)
    429  rate.limited        with Retry-After: the token endpoint's limits, or one
                             account's queries (`ratelimit.PER_ACCOUNT_QUERIES`)
    503  mempool.full        with Retry-After
    and the codes of `aggregator.query.errors` with the status `errors.http_status` gives.

Limits
------
    PAGE_ROWS_MAX      1000     rows a page (`ledger.PAGE_ROWS_MAX`); `limit` defaults to 100.
    LOGIN_BODY_MAX     2048     bytes of a token request: a 64-char name and a 1 KiB password.
    ACCOUNT_BODY_MAX   8192     an account request: the same and up to 64 ids of 64 chars.
    REGISTRY_BYTES_MAX 8192     an enrollment or revocation (as `aggregator.net.http`).
    CUSTOMER_BODY_MAX  4096     a customer record: 896 characters of fields, UTF-8.
    CUSTOMER_TIMES_MAX 4096     meters whose last customer write time is remembered, so
                                two writes in one second get increasing record times
                                (the chain keeps only a newer one); older entries give
                                way to the chain's own time of the meter's record.
    TIME_S_MAX         2^40-1   the ledger's time fields.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from aggregator import tx as tx_mod
from aggregator.app import Device
from aggregator.rules import credit_score, penalty
from edge.crypto import SigningKey
from edge.portable.errors import GridLedgerError, RemoteProtocolError
from gridledger.genesis import Genesis

from . import access, documents, tablejson, tokens
from .access import Action, Resource
from .accounts import DEFAULT_SCRYPT, AccountStore, Principal, ScryptParams
from .confidential import CustomerFields
from .confidential import digest as customer_digest
from .customers import CustomerStore
from .errors import RateLimitedError, http_status
from .ledger import PAGE_ROWS_MAX, LedgerReader, NotFoundError, ReadingIndex
from .metrics import DenialCollector
from .peers import PeerHeads
from .ratelimit import QueryLimiter, TokenRequestLimiter
from .receipts import trust_from_genesis
from .tablejson import Column, Table

LOGIN_BODY_MAX = 2048
ACCOUNT_BODY_MAX = 4 * LOGIN_BODY_MAX
REGISTRY_BYTES_MAX = 8192
CUSTOMER_BODY_MAX = 4096
CUSTOMER_TIMES_MAX = 4096
TIME_S_MAX = (1 << 40) - 1
SEQ_MAX = (1 << 63) - 1
HEIGHT_MAX = (1 << 63) - 1
PAGE_DEFAULT = 100
ID = r"^[A-Za-z0-9._:-]{1,64}$"
DIGEST = r"^[0-9a-f]{64}$"
USERNAME = r"^[A-Za-z0-9._@-]{1,64}$"
ERROR_CODES_MAX = 128
OTHER_CODE = "other"

log = logging.getLogger("gridledger.query")

Format = Literal["json", "csv", "tablejson"]
ProofFormat = Literal["json", "signjson"]
RegistrySubmit = Callable[[bytes], Any]   # ports.Admission


class ApiError(RemoteProtocolError):
    """An answer other than 2xx decided by the API itself (status and code travel)."""

    def __init__(self, status: int, code: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail, code)
        self.status = status
        self.headers = headers or {}


class ErrorBody(BaseModel):
    error: str = Field(description="stable error code, e.g. access.not_owner")
    detail: str


class TokenRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str
    expires_in: int


class CustomerRequest(BaseModel):
    name: str = Field(max_length=256)
    address: str = Field(max_length=512)
    contract: str = Field(max_length=128)


class AccountRequest(BaseModel):
    username: str = Field(pattern=USERNAME)
    role: Literal["resident", "supplier", "auditor", "operator"]
    password: str = Field(min_length=1, max_length=1024)
    meters: list[Annotated[str, Field(pattern=ID)]] = Field(default=[], max_length=32)
    devices: list[Annotated[str, Field(pattern=ID)]] = Field(default=[], max_length=64)


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in (
        (400, "invalid parameter or body"), (401, "no valid access token"),
        (403, "denied by the authorization matrix"), (404, "not found"))
}


@dataclass
class QueryConfig:
    data_dir: Path
    ledger_path: Path
    customer_key_file: Path | None = None
    scrypt: ScryptParams = DEFAULT_SCRYPT
    clock: Callable[[], float] = time.time
    random_bytes: Callable[[int], bytes] = os.urandom
    limiter: TokenRequestLimiter = field(default_factory=TokenRequestLimiter)
    queries: QueryLimiter | None = field(default_factory=QueryLimiter)  # None: unlimited


class QueryMetrics:
    def __init__(self, registry: CollectorRegistry, denials: access.DenialCounter) -> None:
        self.errors = Counter("gl_query_errors", "Query API error answers by code", ["code"],
                              registry=registry)
        registry.register(DenialCollector(denials))
        self._codes: set[str] = set()

    def error(self, code: str) -> None:
        if code not in self._codes and len(self._codes) >= ERROR_CODES_MAX:
            code = OTHER_CODE
        self._codes.add(code)
        self.errors.labels(code).inc()


class QueryApi:
    """Everything the query routes read and write, for one node."""

    def __init__(self, genesis: Genesis, node_id: str, node_key: SigningKey,
                 config: QueryConfig, submit_registry: RegistrySubmit | None = None) -> None:
        self.genesis = genesis
        self.node_id = node_id
        self.node_key = node_key
        self.config = config
        self.clock = config.clock
        self.trust = trust_from_genesis(genesis)
        self.reader = LedgerReader(config.ledger_path, genesis.chain_id)
        self.index = ReadingIndex(config.data_dir, self.reader)
        self.accounts = AccountStore(config.data_dir, config.scrypt, config.random_bytes)
        self.issuer = tokens.TokenIssuer(node_key, node_id, genesis.chain_id,
                                         random_bytes=config.random_bytes)
        self.verifier = tokens.TokenVerifier(genesis.node_keys(), genesis.chain_id)
        self.limiter = config.limiter
        self.queries = config.queries
        self.denials = access.DenialCounter()
        self.documents = documents.DocumentStore(config.data_dir / "documents")
        self.customers = None if config.customer_key_file is None else CustomerStore(
            config.data_dir, config.customer_key_file, config.random_bytes)
        self.submit_registry = submit_registry
        self.peers = PeerHeads([(v.node_id, v.http) for v in genesis.validators
                                if v.node_id != node_id])
        self.metrics: QueryMetrics | None = None
        self._customer_times: OrderedDict[str, int] = OrderedDict()

    @classmethod
    def for_node(cls, opened: Any, data_dir: Path, submit_registry: RegistrySubmit | None,
                 customer_key_file: Path | None = None) -> QueryApi:
        """The query API of a node opened with `aggregator.node.open_node(data_dir)`."""
        from aggregator import node as node_mod
        from edge.crypto import read_private_key

        key = read_private_key(data_dir / node_mod.KEY_FILE)
        config = QueryConfig(data_dir, data_dir / node_mod.LEDGER_FILE, customer_key_file)
        return cls(opened.genesis, opened.node_id, key, config, submit_registry)

    def close(self) -> None:
        for part in (self.index, self.accounts, self.customers, self.reader):
            if part is not None:
                part.close()

    def now_s(self) -> int:
        return int(self.clock())

    def mount(self, app: FastAPI, registry: CollectorRegistry | None = None) -> None:
        self.metrics = QueryMetrics(registry or CollectorRegistry(), self.denials)
        _install_error_handlers(app, self)
        _routes(app, self)

    # -- access --------------------------------------------------------------------------

    def allow(self, principal: Principal | None, action: Action, resource: Resource) -> None:
        decision = access.enforce(principal, action, resource, self.denials)
        if decision.allowed:
            return
        status = 401 if decision.code == "access.unauthenticated" else 403
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        raise ApiError(status, decision.code, decision.reason, headers)

    def customer_time_s(self, meter: str) -> int:
        """The time of a new customer record: now, but after the meter's last one (on
        chain or written here), because the chain keeps a record only if it is newer."""
        on_chain = self.reader.record("customer/" + meter)
        last = max(self._customer_times.get(meter, -1),
                   -1 if on_chain is None else int(on_chain[2]))
        time_s = max(self.now_s(), last + 1)
        self._customer_times[meter] = time_s
        self._customer_times.move_to_end(meter)
        if len(self._customer_times) > CUSTOMER_TIMES_MAX:
            self._customer_times.popitem(last=False)
        return time_s

    def meter_resource(self, meter: str) -> Resource:
        self.index.catch_up()
        return Resource.meter(meter, self.index.devices_of_meter(meter))

    def device_resource(self, device_id: str) -> tuple[Resource, Device | None]:
        try:
            device: Device | None = self.reader.device(device_id)
        except GridLedgerError:
            device = None
        meters = frozenset(device.meters) if device is not None else frozenset()
        return Resource.device(device_id, meters), device


# -- errors ------------------------------------------------------------------------------


def _error(api: QueryApi, status: int, code: str, detail: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    if api.metrics is not None:
        api.metrics.error(code)
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI, api: QueryApi) -> None:
    async def on_project_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GridLedgerError)
        if isinstance(exc, ApiError):
            return _error(api, exc.status, exc.code, exc.message, exc.headers)
        status = 404 if isinstance(exc, NotFoundError) else http_status(exc)
        headers = None
        if isinstance(exc, RateLimitedError):
            headers = {"Retry-After": str(max(1, round(exc.retry_after_s + 0.5)))}
        elif status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        if status >= 500:
            log.error("query.failed", extra={"fields": {"code": exc.code}})
        return _error(api, status, exc.code, exc.message, headers)

    async def on_invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()[:4])
        return _error(api, 400, "http.invalid", where[:400])

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "http.not_found", 405: "http.method", 413: "http.too_large"}.get(
            exc.status_code, "http.error")
        return _error(api, exc.status_code, code, str(exc.detail))

    app.add_exception_handler(GridLedgerError, on_project_error)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(StarletteHTTPException, on_http)


# -- helpers -----------------------------------------------------------------------------


def _table(table: Table, fmt: str, next_link: str | None = None) -> Response:
    body, media_type = tablejson.render(table, fmt)
    headers = {}
    if fmt == "csv":
        headers["Content-Disposition"] = f'attachment; filename="{table.type}.csv"'
    if next_link is not None:
        headers["Link"] = f'<{next_link}>; rel="next"'
    return Response(body, media_type=media_type, headers=headers)


def _json(value: Any, status: int = 200) -> Response:
    return Response(tablejson.canonical_json(value), status_code=status,
                    media_type="application/json")


def _next(request: Request, after: object) -> str:
    return str(request.url.include_query_params(after=after))


async def _bounded_body(request: Request, limit_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise ApiError(413, "http.too_large", f"at most {limit_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


Model = TypeVar("Model", bound=BaseModel)


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a JSON body the handler reads itself (to bound it before parsing)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


async def _parse_body(request: Request, model: type[Model], limit_bytes: int) -> Model:
    raw = await _bounded_body(request, limit_bytes)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: "
                          f"{e.get('msg', '')}" for e in exc.errors()[:4])
        raise ApiError(400, "http.invalid", where[:400]) from None


_bearer = HTTPBearer(auto_error=False, description="access token from POST /v1/auth/token")


async def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """The principal of the request's bearer token; None without one."""
    if credentials is None:
        return None
    api: QueryApi = request.app.state.query_api
    principal = api.verifier.verify(credentials.credentials, api.now_s())
    if api.queries is not None:
        api.queries.check(principal.username, api.clock())
    return principal


Who = Annotated[Principal | None, Depends(_principal)]
Cursor = Annotated[str, Query(pattern=r"^[A-Za-z0-9._:-]{0,64}$")]
RowCursor = Annotated[int, Query(ge=0, le=SEQ_MAX)]
Limit = Annotated[int, Query(ge=1, le=PAGE_ROWS_MAX)]
DeviceId = Annotated[str, PathParam(pattern=ID)]
MeterId = Annotated[str, PathParam(pattern=ID)]
Digest = Annotated[str, PathParam(pattern=DIGEST)]
Height = Annotated[int, PathParam(ge=1, le=HEIGHT_MAX)]


def _routes(app: FastAPI, api: QueryApi) -> None:
    app.state.query_api = api
    _auth_routes(app, api)
    _chain_routes(app, api)
    _meter_routes(app, api)
    _device_routes(app, api)
    _document_routes(app, api)
    _account_routes(app, api)


# -- login -------------------------------------------------------------------------------


def _auth_routes(app: FastAPI, api: QueryApi) -> None:
    @app.post("/v1/auth/token", response_model=TokenResponse, tags=["auth"],
              openapi_extra=_json_body(TokenRequest),
              responses={**_ERRORS, 413: {"model": ErrorBody},
                         429: {"model": ErrorBody, "description": "rate limited"}})
    async def post_token(request: Request) -> Response:
        """Exchange a username and password for a short-lived ES256 JWT."""
        body = await _parse_body(request, TokenRequest, LOGIN_BODY_MAX)
        address = request.client.host if request.client is not None else "unknown"
        api.limiter.check(address, body.username, api.now_s())
        principal = await asyncio.to_thread(api.accounts.authenticate, body.username,
                                            body.password)
        return _json(api.issuer.issue(principal, api.now_s()).response())


# -- chain -------------------------------------------------------------------------------


def _chain_routes(app: FastAPI, api: QueryApi) -> None:
    @app.get("/v1/chain", tags=["chain"], responses=_ERRORS)
    async def get_chain(principal: Who) -> Response:
        """Chain status: height, transaction volume, validators and their heads (the
        others' from their /v1/status, at most 2 s old)."""
        api.allow(principal, Action.CHAIN_READ, access.NONE)
        api.index.catch_up()
        s = api.reader.summary()
        peers = await api.peers.heads(api.clock())
        nodes = []
        height: int | None
        block_hash: str | None
        for v in api.genesis.validators:
            head, reachable = peers.get(v.node_id, (None, False))
            if v.node_id == api.node_id:
                height, block_hash, reachable = s.height, s.block_hash.hex(), True
            else:
                height = None if head is None else head.height
                block_hash = None if head is None else head.block_hash
            nodes.append({"node_id": v.node_id, "power": v.power, "http": v.http,
                          "head": height, "block_hash": block_hash, "reachable": reachable})
        return _json({"chain_id": api.genesis.chain_id, "engine": api.genesis.engine,
                      "height": s.height, "time_s": s.time_s, "block_hash": s.block_hash.hex(),
                      "log_size": s.log_size, "log_root": s.log_root.hex(),
                      "txs": api.index.txs, "indexed_height": api.index.indexed_height,
                      "batches": s.batches, "readings": s.readings,
                      "violations": s.violations, "node_id": api.node_id, "nodes": nodes})

    @app.get("/v1/headers/{height}", tags=["chain"], responses=_ERRORS)
    async def get_header(principal: Who,
                         height: Height) -> Response:
        """A block header (JSON and its exact bytes in hex) and the block's commit."""
        api.allow(principal, Action.CHAIN_READ, access.NONE)
        block = api.reader.block(height)
        return _json({"hash": block.hash().hex(), "header": block.header.to_json(),
                      "header_bytes": block.raw_header().hex(),
                      "commit": api.reader.commit(height).to_json()})

    @app.get("/v1/blocks/{height}", tags=["chain"], responses=_ERRORS)
    async def get_block(principal: Who,
                        height: Height) -> Response:
        """A whole block with its transactions, results and commit (auditors, operators)."""
        from aggregator.net.engine_node import block_json

        api.allow(principal, Action.BLOCK_READ, access.NONE)
        block = api.reader.block(height)
        return _json(block_json(block, api.reader.results(height), api.reader.commit(height)))

    @app.get("/v1/log/consistency", tags=["chain"], responses=_ERRORS)
    async def get_consistency(
        principal: Who,
        first: Annotated[int, Query(alias="from", ge=0, le=SEQ_MAX)],
        second: Annotated[int, Query(alias="to", ge=0, le=SEQ_MAX)],
        format: ProofFormat = "json",
    ) -> Response:
        """RFC 9162 consistency proof between two readings-log sizes, with both roots."""
        api.allow(principal, Action.CHAIN_READ, access.NONE)
        proof = api.reader.consistency(first, second)
        return _signed_or_plain(api, proof, format, f"consistency {first}..{second}")

    @app.get("/v1/readings/{device}/{seq}/receipt", tags=["receipts"], responses=_ERRORS)
    async def get_receipt(
        principal: Who,
        device: DeviceId,
        seq: Annotated[int, PathParam(ge=0, le=SEQ_MAX)],
        format: ProofFormat = "json",
    ) -> Response:
        """One verifiable bundle: the signed batch, inclusion proofs, header and commit."""
        rows = api.reader.batch_rows(device, seq)
        resource = Resource(frozenset(meter for _, _, meter, _ in rows), frozenset({device}))
        api.allow(principal, Action.RECEIPT_READ, resource)
        bundle = api.reader.bundle(device, seq)
        return _signed_or_plain(api, bundle.to_json(), format, f"receipt of {device}/{seq}")


def _signed_or_plain(api: QueryApi, value: dict[str, Any], fmt: str,
                     description: str) -> Response:
    if fmt == "signjson":
        value = tablejson.sign_json(value, api.node_key.sign, api.node_id, description,
                                    api.now_s())
    return _json(value)


# -- meters ------------------------------------------------------------------------------

_READING_COLUMNS = (
    Column("meter", "string", "meter serial"),
    Column("time_s", "timestamp", "read time (bt) the gateway stamped", "s"),
    Column("device_id", "string", "gateway that signed the batch"),
    Column("seq", "integer", "batch sequence number"),
    Column("obis", "string", "OBIS code or status"),
    Column("value", "number", "value in the unit (null for a status record)"),
    Column("text", "string", "status code of a status record"),
    Column("unit", "string", "SI unit of value"),
    Column("height", "integer", "block that committed the batch"),
    Column("leaf_index", "integer", "readings-log leaf of this meter group"),
    Column("verification_lapsed", "boolean",
           "the meter's verification certificate had expired at the read time"),
)


def _meter_routes(app: FastAPI, api: QueryApi) -> None:
    @app.get("/v1/meters/{meter}/readings", tags=["meters"], responses=_ERRORS)
    async def get_readings(
        request: Request, principal: Who,
        meter: MeterId,
        from_s: Annotated[int, Query(alias="from", ge=0, le=TIME_S_MAX)] = 0,
        to_s: Annotated[int, Query(alias="to", ge=0, le=TIME_S_MAX)] = TIME_S_MAX,
        after: RowCursor = 0,
        limit: Limit = PAGE_DEFAULT,
        format: Format = "json",
    ) -> Response:
        """Readings of one meter with read time in [from, to), paged by `after`."""
        api.allow(principal, Action.READINGS_READ, api.meter_resource(meter))
        if from_s > to_s:
            raise ApiError(400, "query.range", "from must not be after to")
        rows = api.index.readings(meter, from_s, to_s, after, limit)
        flagged = api.index.verification_flags(meter) if rows else set()
        cells = tuple(_reading_cells(row, flagged) for row in rows)
        table = Table("readings", f"readings of meter {meter}", api.now_s(),
                      _READING_COLUMNS, cells)
        more = _next(request, rows[-1][0]) if len(rows) == limit else None
        return _table(table, format, more)

    @app.get("/v1/meters/{meter}/customer", tags=["meters"], responses=_ERRORS)
    async def get_customer(principal: Who,
                           meter: MeterId) -> Response:
        """Class II fields of the meter's customer, with the salt that checks the digest."""
        api.allow(principal, Action.CUSTOMER_READ, api.meter_resource(meter))
        if api.customers is None:
            raise ApiError(404, "customer.not_found", "this node keeps no customer records")
        try:
            fields = api.customers.get(meter)
            salt = api.customers.salt(meter)
        except GridLedgerError as exc:
            if exc.code != "confidential.invalid":
                raise
            raise ApiError(404, "customer.not_found", f"no customer of {meter}") from None
        digest = customer_digest(fields, salt).hex()
        chain = _customer_on_chain(api, meter)
        return _json({"meter": meter, "name": fields.name, "address": fields.address,
                      "contract": fields.contract, "salt": salt.hex(), "digest": digest,
                      "chain": chain, "on_chain": chain is not None and
                      chain["digest"] == digest})

    @app.put("/v1/meters/{meter}/customer", tags=["meters"], status_code=202,
             openapi_extra=_json_body(CustomerRequest),
             responses={**_ERRORS, 409: {"model": ErrorBody}, 413: {"model": ErrorBody},
                        503: {"model": ErrorBody}})
    async def put_customer(request: Request, principal: Who, meter: MeterId) -> Response:
        """Write the meter's class II fields (operators): sealed at rest, the salted
        digest submitted to the chain signed by this node."""
        api.allow(principal, Action.CUSTOMER_WRITE, access.NONE)
        body = await _parse_body(request, CustomerRequest, CUSTOMER_BODY_MAX)
        if api.customers is None:
            raise ApiError(404, "customer.no_store", "this node keeps no customer records")
        fields = CustomerFields(body.name, body.address, body.contract)
        sealed, digest = api.customers.seal(meter, fields)
        raw = tx_mod.make_customer(meter, digest, api.customer_time_s(meter),
                                   api.node_id.encode(), api.node_key.sign)
        _admitted(api, raw)
        api.customers.save(sealed)
        return _json({"meter": meter, "digest": digest.hex(), "signer": api.node_id,
                      "tx_hash": tx_mod.tx_hash(raw).hex(), "status": "accepted"}, 202)

    @app.get("/v1/meters/{meter}/documents", tags=["documents"], responses=_ERRORS)
    async def get_meter_documents(principal: Who,
                                  meter: MeterId,
                                  format: Format = "json") -> Response:
        """Class III records (calibration, verification) of one meter."""
        api.allow(principal, Action.DOCUMENT_READ, Resource.meter(meter))
        api.index.catch_up()
        rows = tuple((d.record.digest.hex(), d.record.kind, d.record.meter,
                      d.record.valid_from_s, d.record.valid_until_s, d.signer, d.height)
                     for d in api.index.documents_of_meter(meter))
        return _table(Table("documents", f"documents of meter {meter}", api.now_s(),
                            _DOCUMENT_COLUMNS, rows), format)


def _reading_cells(row: tuple[Any, ...], flagged: set[tuple[str, int]]) -> tuple[Any, ...]:
    _, meter, time_s, device_id, seq, obis, value, unit, height, leaf_index = row
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    text = value if isinstance(value, str) else None
    lapsed = (device_id, seq) in flagged  # rule.verification, as execution found it
    return (meter, time_s, device_id, seq, obis, number, text, unit, height, leaf_index, lapsed)


# -- devices -----------------------------------------------------------------------------

_DEVICE_COLUMNS = (
    Column("device_id", "string", "gateway id"),
    Column("meters", "string", "meters its certificate lists, space separated"),
    Column("revoked", "boolean", "revoked on chain"),
    Column("enrolled", "boolean", "an enrollment registered its certificate"),
    Column("last_seq", "integer", "last committed batch seq (-1: none)"),
    Column("last_height", "integer", "block of the last committed batch"),
    Column("batches", "integer", "committed batches"),
    Column("violations", "integer", "violation records on chain"),
    Column("credit", "integer", "credit score 0..1000 (aggregator.rules)"),
)
_VIOLATION_COLUMNS = (
    Column("device_id", "string", "gateway id"),
    Column("seq", "integer", "batch seq"),
    Column("height", "integer", "block"),
    Column("code", "string", "rule code"),
    Column("meter", "string", "meter serial"),
    Column("obis", "string", "OBIS code"),
    Column("detail", "string", "what the rule saw"),
)
_CREDIT_COLUMNS = (
    Column("device_id", "string", "gateway id"),
    Column("batches", "integer", "committed batches"),
    Column("penalty", "integer", "weighted violations"),
    Column("credit", "integer", "1000 x batches / (batches + penalty)"),
)
_DOCUMENT_COLUMNS = (
    Column("digest", "string", "SHA-256 of the file, hex"),
    Column("kind", "string", "calibration, verification or accreditation"),
    Column("meter", "string", "meter serial"),
    Column("valid_from_s", "timestamp", "valid from", "s"),
    Column("valid_until_s", "timestamp", "valid until", "s"),
    Column("signer", "string", "who signed the record"),
    Column("height", "integer", "block that committed the record"),
)


def _device_cells(device: Device) -> tuple[Any, ...]:
    violations = sum(n for _, n in device.violations)
    return (device.device_id, " ".join(device.meters), device.revoked,
            device.registry_time_s >= 0, device.last_seq, device.last_height, device.batches,
            violations, device.credit)


def _credit_cells(device: Device) -> tuple[Any, ...]:
    counts = dict(device.violations)
    return (device.device_id, device.batches, penalty(counts),
            credit_score(device.batches, counts))


def _visible_devices(api: QueryApi, principal: Principal | None, action: Action,
                     page: list[Device]) -> list[Device]:
    if principal is None:
        api.allow(principal, action, access.NONE)
    return [d for d in page if access.authorize(
        principal, action, Resource.device(d.device_id, frozenset(d.meters))).allowed]


def _device_routes(app: FastAPI, api: QueryApi) -> None:

    @app.get("/v1/devices", tags=["devices"], responses=_ERRORS)
    async def get_devices(request: Request, principal: Who, after: Cursor = "",
                          limit: Limit = PAGE_DEFAULT, format: Format = "json") -> Response:
        """Devices and their status (the ones you may see), paged by device id."""
        page = api.reader.devices(after, limit)
        shown = _visible_devices(api, principal, Action.DEVICE_READ, page)
        table = Table("devices", "devices and their status", api.now_s(), _DEVICE_COLUMNS,
                      tuple(_device_cells(d) for d in shown))
        more = _next(request, page[-1].device_id) if len(page) == limit else None
        return _table(table, format, more)

    @app.get("/v1/devices/{device}", tags=["devices"], responses=_ERRORS)
    async def get_device(principal: Who, device: DeviceId,
                         format: Format = "json") -> Response:
        """One device's status."""
        resource, found = api.device_resource(device)
        api.allow(principal, Action.DEVICE_READ, resource)
        if found is None:
            raise ApiError(404, "query.not_found", f"no device {device!r} on the chain")
        return _table(Table("devices", f"device {device}", api.now_s(), _DEVICE_COLUMNS,
                            (_device_cells(found),)), format)

    @app.get("/v1/devices/{device}/violations", tags=["devices"], responses=_ERRORS)
    async def get_device_violations(
        request: Request, principal: Who, device: DeviceId,
        after: RowCursor = 0, limit: Limit = PAGE_DEFAULT,
        format: Format = "json",
    ) -> Response:
        """Violation records of one device, paged."""
        resource, _ = api.device_resource(device)
        api.allow(principal, Action.VIOLATIONS_READ, resource)
        api.index.catch_up()
        rows = api.index.violations(device, after, limit)
        table = Table("violations", f"violations of {device}", api.now_s(), _VIOLATION_COLUMNS,
                      tuple(r[1:] for r in rows))
        more = _next(request, rows[-1][0]) if len(rows) == limit else None
        return _table(table, format, more)

    @app.get("/v1/violations", tags=["devices"], responses=_ERRORS)
    async def get_violations(
        request: Request, principal: Who, after: RowCursor = 0,
        limit: Limit = PAGE_DEFAULT, format: Format = "json",
    ) -> Response:
        """Violation records of every device you may see, paged."""
        if principal is None:
            api.allow(principal, Action.VIOLATIONS_READ, access.NONE)
        api.index.catch_up()
        rows = api.index.violations(None, after, limit)
        meters: dict[str, frozenset[str]] = {}
        for row in rows:
            if row[1] not in meters:
                meters[row[1]] = api.device_resource(row[1])[0].meters
        shown = tuple(r[1:] for r in rows if access.authorize(
            principal, Action.VIOLATIONS_READ, Resource.device(r[1], meters[r[1]])).allowed)
        table = Table("violations", "violation records", api.now_s(), _VIOLATION_COLUMNS, shown)
        more = _next(request, rows[-1][0]) if len(rows) == limit else None
        return _table(table, format, more)

    @app.get("/v1/credit", tags=["devices"], responses=_ERRORS)
    async def get_credit(request: Request, principal: Who, after: Cursor = "",
                         limit: Limit = PAGE_DEFAULT, format: Format = "json") -> Response:
        """Credit scores of the devices you may see, paged by device id."""
        page = api.reader.devices(after, limit)
        shown = _visible_devices(api, principal, Action.CREDIT_READ, page)
        table = Table("credit", "credit scores", api.now_s(), _CREDIT_COLUMNS,
                      tuple(_credit_cells(d) for d in shown))
        more = _next(request, page[-1].device_id) if len(page) == limit else None
        return _table(table, format, more)

    for action, kind, name in ((Action.DEVICE_ENROLL, tx_mod.ENROLL, "enrollments"),
                               (Action.DEVICE_REVOKE, tx_mod.REVOKE, "revocations")):
        _registry_route(app, api, action, kind, name)


def _registry_route(app: FastAPI, api: QueryApi, action: Action, kind: int,
                    name: str) -> None:
    async def post_registry(request: Request, principal: Who) -> Response:
        api.allow(principal, action, access.NONE)
        raw = await _bounded_body(request, REGISTRY_BYTES_MAX)
        if tx_mod.decode(raw).kind != kind:
            raise ApiError(400, "query.tx_kind", f"this route takes {name} only")
        if api.submit_registry is None:
            raise ApiError(404, "query.no_registry", "this node takes no registry transactions")
        return _admission(api.submit_registry(raw))

    post_registry.__doc__ = (f"Submit a registrar-signed {name[:-1]} transaction "
                             "(application/cbor, `aggregator.tx`) to the chain.")
    app.post(f"/v1/devices/{name}", tags=["devices"], status_code=202,
             responses={**_ERRORS, 409: {"model": ErrorBody}, 413: {"model": ErrorBody},
                        503: {"model": ErrorBody}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/cbor": {"schema": {"type": "string", "format": "binary"}}}}},
             name=f"post_{name}")(post_registry)


def _customer_on_chain(api: QueryApi, meter: str) -> dict[str, Any] | None:
    found = api.reader.record("customer/" + meter)
    if found is None:
        return None
    digest, signer, time_s, tx_hash = found[:4]
    return {"digest": digest.hex(), "signer": signer, "time_s": time_s,
            "tx_hash": tx_hash.hex()}


def _admitted(api: QueryApi, raw: bytes) -> None:
    """Submit a chain tx this node signed; raise unless the mempool admitted it."""
    if api.submit_registry is None:
        raise ApiError(404, "query.no_registry", "this node takes no chain transactions")
    _admission(api.submit_registry(raw))


def _admission(admission: Any) -> Response:
    if admission.outcome == "accepted":
        return _json({"status": "accepted"}, 202)
    if admission.outcome == "overloaded":
        raise ApiError(503, admission.code, admission.reason,
                       {"Retry-After": str(admission.retry_after_s)})
    status = 409 if "duplicate" in admission.code or admission.code.endswith(".exists") else 400
    raise ApiError(status, admission.code, admission.reason or admission.code)


# -- documents ---------------------------------------------------------------------------


def _document_routes(app: FastAPI, api: QueryApi) -> None:
    @app.get("/v1/documents/{digest}", tags=["documents"], responses={
        **_ERRORS, 200: {"content": {"application/octet-stream": {}}}})
    async def get_document(principal: Who, digest: Digest) -> Response:
        """The file whose SHA-256 is `digest`, checked against its name on every read."""
        api.allow(principal, Action.DOCUMENT_READ, access.NONE)
        data = api.documents.get(digest)
        return Response(data, media_type="application/octet-stream",
                        headers={"Digest": f"sha-256={digest}"})

    @app.get("/v1/documents/{digest}/record", tags=["documents"], responses=_ERRORS)
    async def get_document_record(principal: Who, digest: Digest) -> Response:
        """The document's record as committed on chain: digest, kind, meter, validity,
        signer, the signed COSE_Sign1 (`record`), its tx and block."""
        api.index.catch_up()
        found = api.index.document(digest)
        meter = found.record.meter if found is not None else ""
        api.allow(principal, Action.DOCUMENT_READ,
                  Resource.meter(meter) if meter else access.NONE)
        if found is None:
            raise ApiError(404, "document.not_found", f"no record on chain for {digest}")
        record = found.record
        raw = tx_mod.encode(tx_mod.DOCUMENT, found.signed)
        return _json({"digest": digest, "kind": record.kind, "meter": record.meter,
                      "valid_from_s": record.valid_from_s,
                      "valid_until_s": record.valid_until_s, "signer": found.signer,
                      "record": found.signed.hex(), "tx_hash": tx_mod.tx_hash(raw).hex(),
                      "height": found.height})

    @app.post("/v1/documents", tags=["documents"], status_code=202, responses={
        **_ERRORS, 409: {"model": ErrorBody}, 413: {"model": ErrorBody},
        503: {"model": ErrorBody}},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def post_document(
        request: Request, principal: Who,
        kind: Literal["calibration", "verification", "accreditation"],
        valid_from_s: Annotated[int, Query(ge=0, le=TIME_S_MAX)],
        valid_until_s: Annotated[int, Query(ge=0, le=TIME_S_MAX)],
        meter: Annotated[str, Query(pattern=r"^[A-Za-z0-9._:-]{0,64}$")] = "",
    ) -> Response:
        """Store a class III document (operators) and submit its record, signed by this
        node, to the chain; the record shows under .../record once committed."""
        api.allow(principal, Action.DOCUMENT_UPLOAD, access.NONE)
        data = await _bounded_body(request, documents.DOCUMENT_BYTES_MAX)
        record = documents.record_for(data, kind, meter, valid_from_s, valid_until_s)
        signed = documents.sign_record(record, api.node_id, api.node_key.sign)
        raw = tx_mod.encode(tx_mod.DOCUMENT, signed)
        digest = api.documents.put(data)  # content-addressed: harmless if the tx fails
        _admitted(api, raw)
        return _json({"digest": digest, "signer": api.node_id, "record": signed.hex(),
                      "tx_hash": tx_mod.tx_hash(raw).hex(), "status": "accepted"}, 202)


# -- accounts ----------------------------------------------------------------------------

_ACCOUNT_COLUMNS = (
    Column("username", "string", "login name"),
    Column("role", "string", "resident, supplier, auditor or operator"),
    Column("meters", "string", "a resident's meters, space separated"),
    Column("devices", "string", "a supplier's devices, space separated"),
    Column("created_at_s", "timestamp", "when the account was made", "s"),
)


def _account_routes(app: FastAPI, api: QueryApi) -> None:
    @app.get("/v1/accounts", tags=["accounts"], responses=_ERRORS)
    async def get_accounts(principal: Who, format: Format = "json") -> Response:
        """Accounts (operators); never their password hashes."""
        api.allow(principal, Action.ACCOUNTS_MANAGE, access.NONE)
        rows = tuple((a.username, a.role, " ".join(a.meters), " ".join(a.devices),
                      a.created_at_s) for a in api.accounts.list())
        return _table(Table("accounts", "accounts of the query API", api.now_s(),
                            _ACCOUNT_COLUMNS, rows), format)

    @app.post("/v1/accounts", tags=["accounts"], status_code=201,
              openapi_extra=_json_body(AccountRequest),
              responses={**_ERRORS, 409: {"model": ErrorBody}, 413: {"model": ErrorBody}})
    async def post_account(request: Request, principal: Who) -> Response:
        """Add an account (operators); the password is hashed with scrypt."""
        api.allow(principal, Action.ACCOUNTS_MANAGE, access.NONE)
        body = await _parse_body(request, AccountRequest, ACCOUNT_BODY_MAX)
        account = await asyncio.to_thread(
            api.accounts.add, body.username, body.role, body.password, api.now_s(),
            tuple(body.meters), tuple(body.devices))
        return _json({"username": account.username, "role": account.role,
                      "meters": list(account.meters), "devices": list(account.devices)}, 201)

    @app.delete("/v1/accounts/{username}", tags=["accounts"], status_code=204,
                responses=_ERRORS)
    async def delete_account(principal: Who,
                             username: Annotated[str, PathParam(pattern=USERNAME)]) -> Response:
        """Remove an account (operators); tokens already issued expire on their own."""
        api.allow(principal, Action.ACCOUNTS_MANAGE, access.NONE)
        api.accounts.remove(username)
        return Response(status_code=204)

