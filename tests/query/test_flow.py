"""The pieces as the HTTP API will chain them: login, token, access check, answer."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from aggregator.query import access, ratelimit, tablejson, tokens
from aggregator.query.accounts import AccountStore
from aggregator.query.errors import CredentialsError, RateLimitedError, http_status
from aggregator.query.tablejson import Column, Table
from edge.crypto import SigningKey
from tests.query.conftest import CHEAP_SCRYPT, NOW_S

PASSWORD = "resident password 1"


def test_resident_logs_in_reads_own_meter_and_is_refused_another(
        tmp_path: Path, rng: random.Random) -> None:
    node_key = SigningKey.from_bytes(rng.randbytes(31).rjust(32, b"\1"))
    store = AccountStore(tmp_path, CHEAP_SCRYPT, rng.randbytes)
    store.add("alice", "resident", PASSWORD, NOW_S, meters=("M1",))
    limiter = ratelimit.TokenRequestLimiter()
    issuer = tokens.TokenIssuer(node_key, "node-1", "gl-test", random_bytes=rng.randbytes)
    verifier = tokens.TokenVerifier({"node-1": node_key.public_key()}, "gl-test")
    denials = access.DenialCounter()

    limiter.check("192.0.2.1", "alice", NOW_S)
    body = issuer.issue(store.authenticate("alice", PASSWORD), NOW_S).response()
    principal = verifier.verify(str(body["access_token"]), NOW_S + 60)

    own = access.enforce(principal, access.Action.READINGS_READ,
                         access.Resource.meter("M1", frozenset({"gw-1"})), denials)
    assert own.allowed
    table = Table("readings", "readings of M1", NOW_S, (
        Column("meter", "string", "meter serial"),
        Column("energy_import_J", "integer", "import energy", "J")), (("M1", 3_600_000),))
    answer, _ = tablejson.render(table, "tablejson")
    assert json.loads(answer)["Cell"]["rows"] == [["M1", 3_600_000]]

    other = access.enforce(principal, access.Action.READINGS_READ,
                           access.Resource.meter("M2", frozenset({"gw-2"})), denials)
    assert other.code == "access.not_owner" and denials.total() == 1

    for _ in range(ratelimit.PER_USERNAME.burst - 1):
        limiter.check("192.0.2.1", "alice", NOW_S)
        with pytest.raises(CredentialsError) as wrong:
            store.authenticate("alice", "guess guess guess")
        assert http_status(wrong.value) == 401
    with pytest.raises(RateLimitedError) as limited:
        limiter.check("192.0.2.9", "alice", NOW_S)
    assert http_status(limited.value) == 429
    store.close()
