"""Access tokens: round trip, and every attack named in RFC 8725 that applies to us."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from typing import Any

import jwt
import pytest

from aggregator.query import tokens
from aggregator.query.accounts import Principal
from aggregator.query.errors import (
    QuerySetupError,
    TokenAlgorithmError,
    TokenAudienceError,
    TokenClaimsError,
    TokenError,
    TokenExpiredError,
    TokenIssuerError,
    TokenMalformedError,
    TokenNotYetValidError,
    TokenSignatureError,
    TokenTooLargeError,
)
from aggregator.query.tokens import TokenIssuer, TokenVerifier
from edge.crypto import SigningKey, public_key_to_pem
from tests.query.conftest import NOW_S

CHAIN = "gl-test"
RESIDENT = Principal("alice", "resident", frozenset({"M1", "M2"}))
SUPPLIER = Principal("sup", "supplier", devices=frozenset({"gw-1"}))


@pytest.fixture
def key(rng: random.Random) -> SigningKey:
    return SigningKey.from_bytes(rng.randbytes(31).rjust(32, b"\1"))


@pytest.fixture
def issuer(key: SigningKey, rng: random.Random) -> TokenIssuer:
    return TokenIssuer(key, "node-1", CHAIN, random_bytes=rng.randbytes)


@pytest.fixture
def verifier(key: SigningKey, rng: random.Random) -> TokenVerifier:
    other = SigningKey.from_bytes(rng.randbytes(31).rjust(32, b"\2"))
    return TokenVerifier({"node-1": key.public_key(), "node-2": other.public_key()}, CHAIN)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return head + "." + b64(signature)


def good_claims(**changes: Any) -> dict[str, Any]:
    claims = {"iss": "node-1", "aud": CHAIN, "sub": "mallory", "role": "operator",
              "iat": NOW_S, "nbf": NOW_S, "exp": NOW_S + 900, "jti": "00" * 16}
    claims.update(changes)
    return claims


def es256(key: SigningKey, claims: dict[str, Any], **header: Any) -> str:
    headers = {"typ": "at+jwt", "kid": "node-1", **header}
    return jwt.encode(claims, key.to_pem(), algorithm="ES256", headers=headers)


def test_round_trip_keeps_role_and_claims(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    for principal in (RESIDENT, SUPPLIER, Principal("op", "operator")):
        issued = issuer.issue(principal, NOW_S)
        assert issued.expires_in_s == tokens.LIFETIME_S
        assert verifier.verify(issued.access_token, NOW_S + 10) == principal
    claims = tokens.unverified_claims(issuer.issue(RESIDENT, NOW_S).access_token)
    assert claims["iss"] == "node-1" and claims["aud"] == CHAIN
    assert claims["exp"] - claims["iat"] == 900 and claims["nbf"] == claims["iat"]
    assert claims["meters"] == ["M1", "M2"] and len(claims["jti"]) == 32
    header = jwt.get_unverified_header(issuer.issue(RESIDENT, NOW_S).access_token)
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": "node-1"}


def test_jti_differs_per_token(issuer: TokenIssuer) -> None:
    assert issuer.issue(RESIDENT, NOW_S).jti != issuer.issue(RESIDENT, NOW_S).jti


def test_response_body(issuer: TokenIssuer) -> None:
    body = issuer.issue(RESIDENT, NOW_S).response()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["expires_in"] == 900


def test_alg_none_refused(verifier: TokenVerifier) -> None:
    for alg in ("none", "None", "NONE"):
        token = forge({"alg": alg, "typ": "at+jwt", "kid": "node-1"}, good_claims())
        with pytest.raises(TokenAlgorithmError):
            verifier.verify(token, NOW_S)


def test_hs256_with_the_public_key_as_secret_refused(key: SigningKey,
                                                      verifier: TokenVerifier) -> None:
    header = {"alg": "HS256", "typ": "at+jwt", "kid": "node-1"}
    unsigned = forge(header, good_claims()).rsplit(".", 1)[0]
    for secret in (public_key_to_pem(key.public_key()), key.public_key()):
        mac = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
        token = unsigned + "." + b64(mac)
        with pytest.raises(TokenAlgorithmError) as caught:
            verifier.verify(token, NOW_S)
        assert caught.value.code == "token.alg"
        # The second line of defence: PyJWT pinned to ES256 refuses it as well.
        with pytest.raises(TokenAlgorithmError):
            tokens._signed_claims(token, verifier._keys["node-1"])


@pytest.mark.parametrize("alg", ["ES384", "RS256", "EdDSA", "es256", "", None, 7])
def test_other_algorithms_refused(verifier: TokenVerifier, alg: object) -> None:
    token = forge({"alg": alg, "typ": "at+jwt", "kid": "node-1"}, good_claims(), b"x" * 64)
    with pytest.raises(TokenAlgorithmError):
        verifier.verify(token, NOW_S)


def test_signature_by_another_key_refused(verifier: TokenVerifier, rng: random.Random) -> None:
    stranger = SigningKey.from_bytes(rng.randbytes(31).rjust(32, b"\3"))
    with pytest.raises(TokenSignatureError):
        verifier.verify(es256(stranger, good_claims()), NOW_S)


def test_tampered_claims_refused(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    head, _, sig = issuer.issue(RESIDENT, NOW_S).access_token.split(".")
    forged = head + "." + b64(json.dumps(good_claims(role="operator")).encode()) + "." + sig
    with pytest.raises(TokenSignatureError):
        verifier.verify(forged, NOW_S)


def test_expiry_with_leeway(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    token = issuer.issue(RESIDENT, NOW_S).access_token
    last_ok = NOW_S + tokens.LIFETIME_S + tokens.LEEWAY_S - 1
    assert verifier.verify(token, last_ok) == RESIDENT
    with pytest.raises(TokenExpiredError):
        verifier.verify(token, last_ok + 1)


def test_not_yet_valid(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    token = issuer.issue(RESIDENT, NOW_S + 100).access_token
    with pytest.raises(TokenNotYetValidError):
        verifier.verify(token, NOW_S)
    assert verifier.verify(token, NOW_S + 100 - tokens.LEEWAY_S) == RESIDENT


def test_wrong_audience(key: SigningKey, verifier: TokenVerifier) -> None:
    other_chain = TokenIssuer(key, "node-1", "gl-other")
    with pytest.raises(TokenAudienceError):
        verifier.verify(other_chain.issue(RESIDENT, NOW_S).access_token, NOW_S)
    with pytest.raises(TokenAudienceError):
        verifier.verify(es256(key, good_claims(aud=[CHAIN, "x"])), NOW_S)


def test_wrong_issuer(key: SigningKey, verifier: TokenVerifier) -> None:
    with pytest.raises(TokenIssuerError):  # kid not a node of the chain
        verifier.verify(es256(key, good_claims(), kid="node-9"), NOW_S)
    with pytest.raises(TokenIssuerError):  # signed by node-1, claims to be node-2
        verifier.verify(es256(key, good_claims(iss="node-2")), NOW_S)
    with pytest.raises(TokenError):  # kid not even a string
        verifier.verify(forge({"alg": "ES256", "typ": "at+jwt", "kid": ["node-1"]},
                              good_claims(), b"x" * 64), NOW_S)
    with pytest.raises(TokenIssuerError):  # no kid at all
        verifier.verify(forge({"alg": "ES256", "typ": "at+jwt"}, good_claims(), b"x" * 64),
                        NOW_S)


@pytest.mark.parametrize(
    "claims",
    [
        good_claims(role="admin"),
        good_claims(sub=""),
        good_claims(exp="never"),
        good_claims(nbf=True),
        {k: v for k, v in good_claims().items() if k != "jti"},
        {k: v for k, v in good_claims().items() if k != "iat"},
        good_claims(role="resident", meters="M1"),
        good_claims(role="supplier", devices=[1, 2]),
    ],
)
def test_bad_claims(key: SigningKey, verifier: TokenVerifier, claims: dict[str, Any]) -> None:
    with pytest.raises(TokenClaimsError):
        verifier.verify(es256(key, claims), NOW_S)


def test_only_the_role_s_own_list_is_taken(key: SigningKey, verifier: TokenVerifier) -> None:
    principal = verifier.verify(es256(key, good_claims(role="auditor", meters=["M9"])), NOW_S)
    assert principal.meters == frozenset()


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.",
                                   "eyJhbGciOiJFUzI1NiJ9.e30."])
def test_malformed(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(TokenError) as caught:
        verifier.verify(token, NOW_S)
    assert caught.value.code in {"token.malformed", "token.alg"}


def test_wrong_type_header_refused(key: SigningKey, verifier: TokenVerifier) -> None:
    with pytest.raises(TokenMalformedError):
        verifier.verify(es256(key, good_claims(), typ="JWT"), NOW_S)


def test_embedded_key_and_unknown_header_parameters_refused(
        key: SigningKey, verifier: TokenVerifier, rng: random.Random) -> None:
    attacker = SigningKey.from_bytes(rng.randbytes(31).rjust(32, b"\5"))
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(
        jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256).prepare_key(
            attacker.to_pem()).public_key()))
    for extra in ({"jwk": jwk}, {"jku": "https://attacker.example/keys"},
                  {"x5u": "https://attacker.example/cert"}, {"crit": ["exp"]}):
        with pytest.raises(TokenMalformedError):
            verifier.verify(es256(attacker, good_claims(), **extra), NOW_S)
        with pytest.raises(TokenMalformedError):
            verifier.verify(es256(key, good_claims(), **extra), NOW_S)


def test_kid_is_only_a_lookup_name(key: SigningKey, verifier: TokenVerifier) -> None:
    for kid in ("../../../dev/null", "node-1' OR '1'='1", "", "node-1\x00"):
        with pytest.raises(TokenIssuerError):
            verifier.verify(es256(key, good_claims(iss=kid), kid=kid), NOW_S)


def test_oversized_token_refused_before_parsing(verifier: TokenVerifier) -> None:
    with pytest.raises(TokenTooLargeError):
        verifier.verify("a" * (tokens.TOKEN_BYTES_MAX + 1), NOW_S)


def test_lifetime_bounded(key: SigningKey) -> None:
    with pytest.raises(QuerySetupError):
        TokenIssuer(key, "node-1", CHAIN, lifetime_s=tokens.LIFETIME_S_MAX + 1)


def test_error_codes_are_distinct() -> None:
    classes = [TokenMalformedError, TokenTooLargeError, TokenAlgorithmError,
               TokenSignatureError, TokenExpiredError, TokenNotYetValidError,
               TokenAudienceError, TokenIssuerError, TokenClaimsError]
    assert len({c.code for c in classes}) == len(classes)
    assert all(issubclass(c, TokenError) for c in classes)
