"""Access tokens: short-lived JWTs (RFC 7519) signed ES256 by a node of the chain.

Theory of operation
-------------------
A token is a JWS compact serialization (RFC 7515) with the header

    {"alg": "ES256", "typ": "at+jwt", "kid": <node id>}      (typ from RFC 9068 §2.1)

and the claims

    iss    node id that issued it (equals kid)
    aud    chain id: a token for one chain is worthless on another
    sub    username
    role   resident | supplier | auditor | operator
    meters resident only: the meter serials it owns
    devices supplier only: the device ids it runs
    iat, nbf, exp   Unix seconds; nbf = iat, exp = iat + lifetime
    jti    128 random bits, hex: names one token in logs and a future deny list

`TokenVerifier` accepts tokens of every node in its issuer map (the chain's
validators, node id -> public key from the genesis file), so a token from one node works
on all nodes of the same chain.

Checks, in this order, each with its own error code (aggregator/query/errors.py):
size, shape, header alg exactly "ES256" (which refuses "none" and the HS256-with-the-
public-key confusion before any key is touched), typ, no header parameter but alg, typ
and kid (an embedded jwk, jku or x5u is never trusted; RFC 8725 §3.5), kid is a known
issuer, signature (PyJWT,
algorithms pinned to ES256), iss equals kid, aud, nbf and exp against the injected clock
with `LEEWAY_S`, then the role and claim types.  PyJWT never reads the clock here: its own
time, audience and issuer checks are switched off and done below against `now_s`.

Limits (with reasons)
---------------------
    LIFETIME_S       900     15 minutes: an account removed or a role changed takes
                             effect within this time, there being no revocation list
    LIFETIME_S_MAX   3600    no caller may mint day-long bearer tokens
    LEEWAY_S         30      clock skew tolerated between nodes of a chain
    TOKEN_BYTES_MAX  8192    fits one HTTP header line; 64 device ids fit well within
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from edge.crypto import SigningKey, public_key_to_pem

from .accounts import ROLES, Principal
from .errors import (
    QuerySetupError,
    TokenAlgorithmError,
    TokenAudienceError,
    TokenClaimsError,
    TokenExpiredError,
    TokenIssuerError,
    TokenMalformedError,
    TokenNotYetValidError,
    TokenSignatureError,
    TokenTooLargeError,
)

ALGORITHM = "ES256"
TOKEN_TYPE = "at+jwt"
LIFETIME_S = 900
LIFETIME_S_MAX = 3600
LEEWAY_S = 30
TOKEN_BYTES_MAX = 8192
JTI_BYTES = 16
HEADER_PARAMETERS = frozenset({"alg", "typ", "kid"})

RandomBytes = Callable[[int], bytes]


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in_s: int
    jti: str

    def response(self) -> dict[str, object]:
        """The JSON body of POST /v1/auth/token (RFC 6749 §5.1 names)."""
        return {"access_token": self.access_token, "token_type": "Bearer",
                "expires_in": self.expires_in_s}


class TokenIssuer:
    """Mints tokens for authenticated principals with this node's key."""

    def __init__(self, key: SigningKey, node_id: str, chain_id: str,
                 lifetime_s: int = LIFETIME_S, random_bytes: RandomBytes = os.urandom) -> None:
        if not 0 < lifetime_s <= LIFETIME_S_MAX:
            raise QuerySetupError(f"token lifetime must be 1..{LIFETIME_S_MAX} s")
        self._key = serialization.load_pem_private_key(key.to_pem(), password=None)
        self.node_id = node_id
        self.chain_id = chain_id
        self.lifetime_s = lifetime_s
        self._random_bytes = random_bytes

    def issue(self, principal: Principal, now_s: int) -> IssuedToken:
        jti = self._random_bytes(JTI_BYTES).hex()
        claims: dict[str, Any] = {
            "iss": self.node_id, "aud": self.chain_id, "sub": principal.username,
            "role": principal.role, "iat": now_s, "nbf": now_s,
            "exp": now_s + self.lifetime_s, "jti": jti,
        }
        if principal.role == "resident":
            claims["meters"] = sorted(principal.meters)
        if principal.role == "supplier":
            claims["devices"] = sorted(principal.devices)
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM,  # type: ignore[arg-type]
                           headers={"typ": TOKEN_TYPE, "kid": self.node_id})
        if len(token) > TOKEN_BYTES_MAX:
            raise QuerySetupError(f"token over {TOKEN_BYTES_MAX} bytes: too many claims")
        return IssuedToken(token, self.lifetime_s, jti)


class TokenVerifier:
    """Checks tokens issued by any node of one chain; `issuers` maps node id -> public key."""

    def __init__(self, issuers: Mapping[str, bytes], chain_id: str,
                 leeway_s: int = LEEWAY_S) -> None:
        self._keys = {node: _public_key_object(pub) for node, pub in issuers.items()}
        self.chain_id = chain_id
        self.leeway_s = leeway_s

    def verify(self, token: str, now_s: int) -> Principal:
        """The principal a valid token names; a TokenError subclass otherwise."""
        header = _header(token)
        node_id = header.get("kid")
        if not isinstance(node_id, str) or node_id not in self._keys:
            raise TokenIssuerError("token not issued by a node of this chain")
        claims = _signed_claims(token, self._keys[node_id])
        self._check_registered(claims, node_id, now_s)
        return _principal(claims)

    def _check_registered(self, claims: dict[str, Any], node_id: str, now_s: int) -> None:
        if claims.get("iss") != node_id:
            raise TokenIssuerError("iss is not the node that signed the token")
        if claims.get("aud") != self.chain_id:
            raise TokenAudienceError(f"token is for another chain, not {self.chain_id!r}")
        nbf, exp = _int_claim(claims, "nbf"), _int_claim(claims, "exp")
        _int_claim(claims, "iat")
        if now_s + self.leeway_s < nbf:
            raise TokenNotYetValidError("token not valid yet")
        if now_s - self.leeway_s >= exp:
            raise TokenExpiredError("token expired")


def _public_key_object(public_key: bytes) -> Any:
    return serialization.load_pem_public_key(public_key_to_pem(public_key))


def _header(token: str) -> dict[str, Any]:
    if not isinstance(token, str) or len(token) > TOKEN_BYTES_MAX:
        raise TokenTooLargeError(f"token over {TOKEN_BYTES_MAX} bytes")
    if token.count(".") != 2:
        raise TokenMalformedError("not a JWS compact serialization (three parts)")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenMalformedError(f"header: {exc}") from None
    if header.get("alg") != ALGORITHM:
        raise TokenAlgorithmError(f"algorithm {header.get('alg')!r} refused; only ES256")
    if header.get("typ") != TOKEN_TYPE:
        raise TokenMalformedError(f"typ must be {TOKEN_TYPE!r}")
    extra = set(header) - HEADER_PARAMETERS
    if extra:  # jwk, jku, x5u, crit ...: we never send them, and must not trust them
        raise TokenMalformedError(f"unexpected header parameters {sorted(extra)}")
    return header


def _signed_claims(token: str, key: Any) -> dict[str, Any]:
    options: Any = {"verify_signature": True, "verify_exp": False, "verify_nbf": False,
                    "verify_iat": False, "verify_aud": False, "verify_iss": False,
                    "require": []}
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], options=options)
    except jwt.InvalidSignatureError:
        raise TokenSignatureError("signature does not verify") from None
    except jwt.InvalidAlgorithmError as exc:
        raise TokenAlgorithmError(str(exc)) from None
    except jwt.PyJWTError as exc:
        raise TokenMalformedError(str(exc)) from None
    if not isinstance(claims, dict):
        raise TokenMalformedError("claims are not a JSON object")
    return claims


def _int_claim(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TokenClaimsError(f"claim {name!r} missing or not an integer")
    return value


def _str_list(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TokenClaimsError(f"claim {name!r} must be a list of strings")
    return frozenset(value)


def _principal(claims: Mapping[str, Any]) -> Principal:
    username, role = claims.get("sub"), claims.get("role")
    if not isinstance(username, str) or not username:
        raise TokenClaimsError("claim 'sub' missing")
    if role not in ROLES:
        raise TokenClaimsError(f"role {role!r} unknown")
    if not isinstance(claims.get("jti"), str):
        raise TokenClaimsError("claim 'jti' missing")
    meters = _str_list(claims, "meters") if role == "resident" else frozenset()
    devices = _str_list(claims, "devices") if role == "supplier" else frozenset()
    return Principal(username, str(role), meters, devices)


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims without any check, for logs and tests only; never for decisions."""
    payload = token.split(".")[1]
    return dict(json.loads(jwt.utils.base64url_decode(payload)))
