"""Accounts of the query API: who may log in, with which role and which meters or devices.

Theory of operation
-------------------
An account is a username, one role (resident, supplier, auditor, operator), the meter
serials a resident owns and the device ids a supplier runs.  Its password is kept only
as an scrypt hash (RFC 7914) in a PHC-style string

    $scrypt$ln=15,r=8,p=1$<salt, base64>$<hash, base64>

and compared in constant time (`hmac.compare_digest`).  scrypt is memory-hard and in
the standard library (OpenSSL), so no extra dependency: argon2id would be as good, but
would add a native package to every node for no gain here.

Parameters (`ScryptParams`, default N = 2^15, r = 8, p = 1): each guess costs
128·N·r = 32 MiB of memory and about 0.1-0.2 s of one core.  That is twice the memory
of the scrypt paper's interactive setting (N = 2^14) and stays affordable on a 2-core
node behind the token rate limits (docs/query-access.md).  The parameters are stored
with each hash, so they can be raised later without invalidating accounts; a stored
hash asking for more than `SCRYPT_LN_MAX` is refused rather than run.

`authenticate` does the same scrypt work for an unknown user as for a wrong password,
so response time does not tell which usernames exist.

Storage: SQLite at DATA_DIR/accounts.sqlite, WAL, synchronous=FULL, file mode 0600.

Limits (with reasons)
---------------------
    USERNAME_PATTERN       1..64 of [A-Za-z0-9._@-]  printable, safe in logs and URLs
    PASSWORD_MIN_CHARS     12      NIST SP 800-63B allows 8; 12 since accounts are few
                                   and made by operators, not self-service
    PASSWORD_MAX_BYTES     1024    bounds the work an attacker can make scrypt do
    METERS_MAX             32      a resident's meters travel in the token's claims
    DEVICES_MAX            64      idem for a supplier; keeps a token under 8 KiB
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import scrypt
from pathlib import Path

from gridledger.files import open_private_sqlite

from .errors import (
    AccountError,
    AccountExistsError,
    CredentialsError,
    QuerySetupError,
    UnknownAccountError,
    WeakPasswordError,
)

ROLES = ("resident", "supplier", "auditor", "operator")
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9._@-]{1,64}")
IDENTIFIER_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # meter serials and device ids
PASSWORD_MIN_CHARS = 12
PASSWORD_MAX_BYTES = 1024
METERS_MAX = 32
DEVICES_MAX = 64
SCRYPT_LN_MAX = 20  # 2^20 · 8 · 128 = 1 GiB: beyond that a stored hash is corrupt or hostile
SALT_BYTES = 16
HASH_BYTES = 32
DB_NAME = "accounts.sqlite"

RandomBytes = Callable[[int], bytes]


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost: N = 2^log_n, block size r, parallelism p."""

    log_n: int = 15
    r: int = 8
    p: int = 1

    def memory_bytes(self) -> int:
        return 128 * self.r * (1 << self.log_n) * self.p


DEFAULT_SCRYPT = ScryptParams()


@dataclass(frozen=True)
class Principal:
    """Who is asking: what a verified token or a successful login says."""

    username: str
    role: str
    meters: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    meters: tuple[str, ...]
    devices: tuple[str, ...]
    created_at_s: int

    def principal(self) -> Principal:
        return Principal(self.username, self.role, frozenset(self.meters),
                         frozenset(self.devices))


# -- password hashing (pure given the salt) ---------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password: bytes, salt: bytes, params: ScryptParams) -> bytes:
    return scrypt(password, salt=salt, n=1 << params.log_n, r=params.r, p=params.p,
                  maxmem=params.memory_bytes() + (1 << 20), dklen=HASH_BYTES)


def hash_password(password: str, salt: bytes, params: ScryptParams = DEFAULT_SCRYPT) -> str:
    """The PHC-style string stored for `password` with this salt and these parameters."""
    digest = _scrypt(password.encode(), salt, params)
    return f"$scrypt$ln={params.log_n},r={params.r},p={params.p}${_b64(salt)}${_b64(digest)}"


_PHC = re.compile(
    r"\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)"
)


def _parse_hash(stored: str) -> tuple[ScryptParams, bytes, bytes]:
    match = _PHC.fullmatch(stored)
    if match is None:
        raise AccountError("stored password hash is not an scrypt PHC string")
    params = ScryptParams(int(match[1]), int(match[2]), int(match[3]))
    if not (1 <= params.log_n <= SCRYPT_LN_MAX and params.r >= 1 and params.p >= 1):
        raise AccountError("stored scrypt parameters out of range")
    return params, _unb64(match[4]), _unb64(match[5])


def password_matches(password: str, stored: str) -> bool:
    """Constant-time check of `password` against a stored hash."""
    params, salt, expected = _parse_hash(stored)
    raw = password.encode()
    if len(raw) > PASSWORD_MAX_BYTES:  # never stored, so never right; length is no secret
        return False
    return hmac.compare_digest(_scrypt(raw, salt, params), expected)


def check_password_policy(password: str) -> None:
    if len(password) < PASSWORD_MIN_CHARS:
        raise WeakPasswordError(f"password too short: at least {PASSWORD_MIN_CHARS} characters")
    if len(password.encode()) > PASSWORD_MAX_BYTES:
        raise WeakPasswordError(f"password longer than {PASSWORD_MAX_BYTES} bytes")
    if password.strip() == "" or "\n" in password or "\r" in password:
        raise WeakPasswordError("password is blank or carries line breaks")


# -- validation ----------------------------------------------------------------------------


def validate_account(username: str, role: str, meters: tuple[str, ...],
                     devices: tuple[str, ...]) -> None:
    """Raise AccountError unless these fields make a consistent account."""
    if USERNAME_PATTERN.fullmatch(username) is None:
        raise AccountError(f"username {username!r}: 1..64 of [A-Za-z0-9._@-]")
    if role not in ROLES:
        raise AccountError(f"role {role!r} is not one of {', '.join(ROLES)}")
    for item in meters + devices:
        if IDENTIFIER_PATTERN.fullmatch(item) is None:
            raise AccountError(f"meter serial or device id {item!r}: 1..64 of [A-Za-z0-9._:-]")
    if (meters and role != "resident") or (devices and role != "supplier"):
        raise AccountError("only residents have meters and only suppliers have devices")
    if role == "resident" and not 1 <= len(meters) <= METERS_MAX:
        raise AccountError(f"a resident needs 1..{METERS_MAX} meters (--meter)")
    if role == "supplier" and not 1 <= len(devices) <= DEVICES_MAX:
        raise AccountError(f"a supplier needs 1..{DEVICES_MAX} devices (--device)")


# -- the store -------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    meters TEXT NOT NULL,          -- JSON array of meter serials
    devices TEXT NOT NULL,         -- JSON array of device ids
    password_hash TEXT NOT NULL,
    created_at_s INTEGER NOT NULL
)
"""


class AccountStore:
    """Accounts in DATA_DIR/accounts.sqlite; one connection guarded by a lock."""

    def __init__(self, data_dir: Path, params: ScryptParams = DEFAULT_SCRYPT,
                 random_bytes: RandomBytes = os.urandom, create: bool = True) -> None:
        self.path = data_dir / DB_NAME
        self._params = params
        self._random_bytes = random_bytes
        self._lock = threading.Lock()
        if not create and not self.path.exists():
            raise QuerySetupError(f"{self.path}: no accounts yet (use `accounts add`)")
        self._db = open_private_sqlite(self.path)
        self._db.execute(_SCHEMA)
        # Checked for an unknown user, so that it costs as much as a wrong password.
        self._dummy_hash = ""

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add(self, username: str, role: str, password: str, now_s: int,
            meters: tuple[str, ...] = (), devices: tuple[str, ...] = ()) -> Account:
        validate_account(username, role, meters, devices)
        check_password_policy(password)
        meters, devices = tuple(sorted(set(meters))), tuple(sorted(set(devices)))
        stored = hash_password(password, self._random_bytes(SALT_BYTES), self._params)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM accounts WHERE username = ?", (username,)).fetchone():
                raise AccountExistsError(f"account {username!r} exists")
            db.execute("INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?)",
                       (username, role, json.dumps(meters), json.dumps(devices), stored, now_s))
        return Account(username, role, meters, devices, now_s)

    def remove(self, username: str) -> None:
        with self._transaction() as db:
            if db.execute("DELETE FROM accounts WHERE username = ?", (username,)).rowcount != 1:
                raise UnknownAccountError(f"no account {username!r}")

    def list(self) -> list[Account]:
        with self._lock:
            rows = self._db.execute("SELECT username, role, meters, devices, created_at_s "
                                    "FROM accounts ORDER BY username").fetchall()
        return [_account(row) for row in rows]

    def get(self, username: str) -> Account:
        with self._lock:
            row = self._db.execute("SELECT username, role, meters, devices, created_at_s "
                                   "FROM accounts WHERE username = ?", (username,)).fetchone()
        if row is None:
            raise UnknownAccountError(f"no account {username!r}")
        return _account(row)

    def authenticate(self, username: str, password: str) -> Principal:
        """The principal for these credentials, or CredentialsError (same cost either way)."""
        with self._lock:
            row = self._db.execute("SELECT password_hash FROM accounts WHERE username = ?",
                                   (username,)).fetchone()
        if row is None and not self._dummy_hash:
            self._dummy_hash = hash_password("x" * PASSWORD_MIN_CHARS, bytes(SALT_BYTES),
                                             self._params)
        stored = row[0] if row is not None else self._dummy_hash
        if not password_matches(password, stored) or row is None:
            raise CredentialsError("unknown username or wrong password")
        try:
            return self.get(username).principal()
        except UnknownAccountError:  # removed meanwhile
            raise CredentialsError("unknown username or wrong password") from None


def _account(row: tuple[str, str, str, str, int]) -> Account:
    username, role, meters, devices, created_at_s = row
    return Account(username, role, tuple(json.loads(meters)), tuple(json.loads(devices)),
                   created_at_s)
