"""The authorization matrix over HTTP: every role against every endpoint of a real node.

The expected answers are written out by hand (they are the table of
docs/query-access.md applied to the fixture world of `tests/query/live.py`), and the
test first checks that the table names every operation /openapi.json describes, so a
new route cannot be added without deciding who may call it.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from aggregator.query.access import Action
from tests.query.live import LiveNode

ROLES = ("anonymous", "alice", "bob", "sup", "audit", "op")
DOC = b"verification certificate of M-A1, lab 7"
DOC_DIGEST = hashlib.sha256(DOC).hexdigest()
PUBLIC = {"GET /v1/status", "GET /metrics", "POST /v1/registry", "POST /v1/auth/token"}

# Expected status per role: anonymous, alice (resident of M-A1), bob (resident of M-B1),
# sup (supplier of gw-a), audit, op.  gw-a reads M-A1, gw-b M-B1, gw-mix both.
ALL = (401, 200, 200, 200, 200, 200)
ONLY_STAFF = (401, 403, 403, 403, 200, 200)
A_SIDE = (401, 200, 403, 200, 200, 200)
MIXED = (401, 403, 403, 403, 200, 200)
MATRIX: list[tuple[str, str, tuple[int, ...]]] = [
    ("GET", "/v1/chain", ALL),
    ("GET", "/v1/headers/1", ALL),
    ("GET", "/v1/blocks/1", ONLY_STAFF),
    ("GET", "/v1/log/consistency?from=1&to=2", ALL),
    ("GET", "/v1/readings/gw-a/1/receipt", A_SIDE),
    ("GET", "/v1/readings/gw-mix/1/receipt", MIXED),
    ("GET", "/v1/readings/gw-b/1/receipt", (401, 403, 200, 403, 200, 200)),
    ("GET", "/v1/meters/M-A1/readings", A_SIDE),
    ("GET", "/v1/meters/M-B1/readings", (401, 403, 200, 403, 200, 200)),  # gw-b, gw-mix
    ("GET", "/v1/meters/M-A1/customer", A_SIDE),
    ("PUT", "/v1/meters/M-W1/customer", (401, 403, 403, 403, 403, 202)),
    ("GET", "/v1/meters/M-A1/documents", ALL),
    ("GET", "/v1/devices", ALL),
    ("GET", "/v1/devices/gw-a", A_SIDE),
    ("GET", "/v1/devices/gw-mix", (401, 200, 200, 403, 200, 200)),
    ("GET", "/v1/devices/gw-a/violations", A_SIDE),
    ("GET", "/v1/violations", ALL),
    ("GET", "/v1/credit", ALL),
    ("POST", "/v1/devices/enrollments", (401, 403, 403, 403, 403, 202)),
    ("POST", "/v1/devices/revocations", (401, 403, 403, 403, 403, 202)),
    ("GET", f"/v1/documents/{DOC_DIGEST}", ALL),
    ("GET", f"/v1/documents/{DOC_DIGEST}/record", ALL),
    ("POST", "/v1/documents?kind=verification&meter=M-A1&valid_from_s=1&valid_until_s=2",
     (401, 403, 403, 403, 403, 202)),
    ("GET", "/v1/accounts", (401, 403, 403, 403, 403, 200)),
    ("POST", "/v1/accounts", (401, 403, 403, 403, 403, 201)),
    ("DELETE", "/v1/accounts/tmp-user", (401, 403, 403, 403, 403, 204)),
]


def _operation(method: str, path: str, openapi_paths: list[str]) -> str:
    bare = path.split("?")[0]
    if bare in openapi_paths:
        return f"{method} {bare}"
    for template in openapi_paths:
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), bare):
            return f"{method} {template}"
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def test_matrix_covers_every_operation(live: LiveNode) -> None:
    document = live.http("GET", "/openapi.json").json()
    paths = list(document["paths"])
    described = {f"{m.upper()} {p}" for p, ops in document["paths"].items() for m in ops}
    covered = {_operation(method, path, paths) for method, path, _ in MATRIX}
    assert described - PUBLIC == covered, (described - PUBLIC) ^ covered


def _body(live: LiveNode, method: str, path: str, role: str) -> tuple[bytes | None, str]:
    if path.startswith("/v1/devices/enrollments"):
        return live.enrollment(live.gateway(f"gw-new-{role}", ("M-N1",))), "application/cbor"
    if path.startswith("/v1/devices/revocations"):
        return live.revocation(f"gw-gone-{role}"), "application/cbor"
    if path.startswith("/v1/documents?"):  # a new file each time: a digest is recorded once
        return DOC + b" " + role.encode(), "application/octet-stream"
    if method == "PUT" and path.endswith("/customer"):
        return json.dumps({"name": f"Alice {role}", "address": "1 Main St",
                           "contract": "C-17"}).encode(), "application/json"
    if method == "POST" and path == "/v1/accounts":
        return json.dumps({"username": f"new-{role}", "role": "auditor",
                           "password": "a long enough password"}).encode(), "application/json"
    return None, "application/json"


@pytest.fixture(scope="module")
def seeded(live: LiveNode) -> LiveNode:
    """The document and the account the matrix reads and deletes exist first."""
    answer = live.http("POST", "/v1/documents?kind=verification&meter=M-A1&valid_from_s=1"
                       "&valid_until_s=2", body=DOC, content_type="application/octet-stream",
                       user="op")
    assert answer.status == 202, answer.body
    live.wait_document(DOC_DIGEST)
    return live


@pytest.mark.parametrize("method, path, expected", MATRIX,
                         ids=[f"{m} {p.split('?')[0]}" for m, p, _ in MATRIX])
def test_every_role_gets_what_the_matrix_says(seeded: LiveNode, method: str, path: str,
                                              expected: tuple[int, ...]) -> None:
    live = seeded
    if method == "DELETE":
        live.on_loop(lambda: live.api.accounts.add("tmp-user", "auditor",
                                                   "a long enough password", 0))
    got = {}
    for role in ROLES:
        body, kind = _body(live, method, path, role)
        token = None if role == "anonymous" else live.token(role)
        answer = live.http(method, path, token=token, body=body, content_type=kind)
        got[role] = answer.status
        if answer.status >= 400:
            code = answer.json()["error"]
            wanted = {401: "access.unauthenticated", 403: ("access.role", "access.not_owner")}
            assert code in wanted.get(answer.status, ()), (role, answer.body)
    assert got == dict(zip(ROLES, expected, strict=True))


def test_denials_are_counted_on_metrics(live: LiveNode) -> None:
    before = live.api.denials.counts().get(("resident", Action.READINGS_READ.value,
                                            "access.not_owner"), 0)
    answer = live.http("GET", "/v1/meters/M-B1/readings", user="alice")
    assert answer.status == 403 and answer.json()["error"] == "access.not_owner"
    metrics = live.http("GET", "/metrics").body.decode()
    line = ('gl_query_access_denied_total{action="readings.read",code="access.not_owner",'
            'role="resident"}')
    assert any(row.startswith(line) and float(row.split()[-1]) >= before + 1
               for row in metrics.splitlines()), metrics
    assert 'gl_query_errors_total{code="access.not_owner"}' in metrics
