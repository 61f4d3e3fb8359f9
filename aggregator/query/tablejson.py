"""Tabular answers as TableJson, CSV or JSON, and signed objects as SignJson.

Theory of operation
-------------------
Every tabular answer of the query API is one `Table`: a type name, a description, the
time it was made, typed columns (name, type, description, unit) and rows.  The three
renderers read the same object, so the formats cannot drift apart:

TableJson, the envelope of the platform paper (Type, Property, Structure, Cell):

    {"Type": "readings",
     "Property": {"description": "...", "timestamp": "2026-11-21T23:00:00Z", "count": 2},
     "Structure": [{"name": "meter", "type": "string", "description": "...", "unit": ""},
                   ...],
     "Cell": {"type": "readings", "fields": ["meter", ...], "encoding": "json-rows",
              "rows": [["SDM630-17", ...], ...]}}

CSV (RFC 4180, CRLF, a header of column names; names carry their unit last), and plain
JSON (an array of objects keyed by column name).  Column types and their JSON form:
string, integer, number (finite), boolean, timestamp (integer Unix seconds) and bytes
(lowercase hex).  Any cell may be null.

SignJson carries a signed object (a receipt, a proof, a table) as a JWS in the flattened
JSON serialization (RFC 7515 §7.2.2), plus the paper's Type and Property members, which
JWS readers ignore:

    {"Type": "SignJson",
     "Property": {"description": "...", "timestamp": "..."},      (not signed)
     "protected": base64url({"alg": "ES256", "kid": <node id>, "iat": <Unix s>,
                             "cty": "json"}),
     "payload":   base64url(canonical JSON of the object),
     "signature": base64url(r || s, 64 bytes)}

The signature is ES256 over ASCII(protected || "." || payload), as in every JWS, so any
JOSE library can check it with the node's public key from the genesis file.  Canonical
JSON here: keys sorted, no spaces, UTF-8, no NaN or infinities.

Limits (with reasons)
---------------------
    COLUMNS_MAX      64       the widest answer (a reading row) has about a dozen
    ROWS_MAX         10 000   one page; the API pages longer answers
    SIGNJSON_BYTES_MAX  1 MiB a receipt with its proofs is a few KiB
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge import crypto
from gridledger.output import iso_utc

from .errors import SignJsonError, TableError

COLUMN_TYPES = ("string", "integer", "number", "boolean", "timestamp", "bytes")
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
COLUMNS_MAX = 64
ROWS_MAX = 10_000
SIGNJSON_BYTES_MAX = 1024 * 1024
FORMATS = ("json", "csv", "tablejson")
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8",
               "tablejson": "application/json"}
_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

SignFn = Callable[[bytes], bytes]


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str
    unit: str = ""


@dataclass(frozen=True)
class Table:
    type: str
    description: str
    timestamp_s: int
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]

    def __post_init__(self) -> None:
        _check_columns(self.columns)
        if len(self.rows) > ROWS_MAX:
            raise TableError(f"more than {ROWS_MAX} rows: page the answer")
        for row in self.rows:
            if len(row) != len(self.columns):
                raise TableError(f"row of {len(row)} cells for {len(self.columns)} columns")
            for column, value in zip(self.columns, row, strict=True):
                _check_cell(column, value)


def _check_columns(columns: Sequence[Column]) -> None:
    if not 1 <= len(columns) <= COLUMNS_MAX:
        raise TableError(f"a table has 1..{COLUMNS_MAX} columns")
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise TableError("column names repeat")
    for column in columns:
        if NAME_PATTERN.fullmatch(column.name) is None or column.type not in COLUMN_TYPES:
            raise TableError(f"column {column.name!r}: bad name or type {column.type!r}")


def _check_cell(column: Column, value: Any) -> None:
    if value is None:
        return
    kind = column.type
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "timestamp": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool)
        and math.isfinite(value),
        "boolean": isinstance(value, bool),
        "bytes": isinstance(value, bytes),
    }[kind]
    if not ok:
        raise TableError(f"column {column.name!r} ({kind}): cell {value!r} does not fit")


def _json_cell(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else value


# -- renderers ----------------------------------------------------------------------------


def to_tablejson(table: Table) -> dict[str, Any]:
    return {
        "Type": table.type,
        "Property": {"description": table.description, "timestamp": iso_utc(table.timestamp_s),
                     "count": len(table.rows)},
        "Structure": [{"name": c.name, "type": c.type, "description": c.description,
                       "unit": c.unit} for c in table.columns],
        "Cell": {"type": table.type, "fields": [c.name for c in table.columns],
                 "encoding": "json-rows",
                 "rows": [[_json_cell(v) for v in row] for row in table.rows]},
    }


def to_json_rows(table: Table) -> list[dict[str, Any]]:
    names = [c.name for c in table.columns]
    return [{n: _json_cell(v) for n, v in zip(names, row, strict=True)} for row in table.rows]


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.hex()
    text = str(value)
    # A spreadsheet would run a cell starting like a formula; quote it (OWASP CSV injection).
    if isinstance(value, str) and text.startswith(_CSV_FORMULA_START):
        return "'" + text
    return text


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([c.name for c in table.columns])
    for row in table.rows:
        writer.writerow([_csv_cell(v) for v in row])
    return out.getvalue()


def render(table: Table, fmt: str) -> tuple[bytes, str]:
    """Body and media type for `?format=` json, csv or tablejson."""
    if fmt == "csv":
        return to_csv(table).encode(), MEDIA_TYPES[fmt]
    if fmt == "tablejson":
        return canonical_json(to_tablejson(table)), MEDIA_TYPES[fmt]
    if fmt == "json":
        return canonical_json(to_json_rows(table)), MEDIA_TYPES[fmt]
    raise TableError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")


def canonical_json(value: Any) -> bytes:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise TableError(f"not representable as JSON: {exc}") from None


# -- SignJson -----------------------------------------------------------------------------


def _b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64u(text: Any, field: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise SignJsonError(f"{field}: not base64url", "signjson.structure")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise SignJsonError(f"{field}: not base64url", "signjson.structure") from None
    if _b64u(raw) != text:  # unused low bits set: one value, one spelling
        raise SignJsonError(f"{field}: not canonical base64url", "signjson.structure")
    return raw


def sign_json(payload: Any, sign: SignFn, kid: str, description: str,
              now_s: int) -> dict[str, Any]:
    """A SignJson object over `payload`; `sign` is the node key's ES256 (r || s)."""
    protected = _b64u(canonical_json({"alg": "ES256", "kid": kid, "iat": now_s, "cty": "json"}))
    body = _b64u(canonical_json(payload))
    signature = sign(f"{protected}.{body}".encode("ascii"))
    return {"Type": "SignJson",
            "Property": {"description": description, "timestamp": iso_utc(now_s)},
            "protected": protected, "payload": body, "signature": _b64u(signature)}


def verify_sign_json(document: Mapping[str, Any], public_keys: Mapping[str, bytes]) -> Any:
    """The signed payload, after checking the signature against the kid's public key."""
    if document.get("Type") != "SignJson":
        raise SignJsonError("not a SignJson object", "signjson.structure")
    header = _json_member(document.get("protected"), "protected")
    if not isinstance(header, dict) or header.get("alg") != "ES256":
        raise SignJsonError("only ES256 is accepted", "signjson.alg")
    kid = header.get("kid")
    public_key = public_keys.get(kid) if isinstance(kid, str) else None
    if public_key is None:
        raise SignJsonError(f"unknown signer {header.get('kid')!r}", "signjson.signature")
    signed = f"{document['protected']}.{document.get('payload')}".encode("ascii", "replace")
    signature = _unb64u(document.get("signature"), "signature")
    payload = _json_member(document.get("payload"), "payload")
    if not crypto.verify(public_key, signed, signature):
        raise SignJsonError("signature does not verify", "signjson.signature")
    return payload


def _json_member(text: Any, field: str) -> Any:
    raw = _unb64u(text, field)
    if len(raw) > SIGNJSON_BYTES_MAX:
        raise SignJsonError(f"{field} over {SIGNJSON_BYTES_MAX} bytes", "signjson.structure")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise SignJsonError(f"{field}: not JSON", "signjson.structure") from None
