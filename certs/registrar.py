"""The registrar: a utility's registration centre that certifies device keys.

A registrar directory holds

    registrar.key        P-256 private key, PEM PKCS#8, mode 0600 (never leaves the dir)
    registrar.pub        its public key, PEM (goes into every genesis file)
    registrar.json       name and key id
    issued.jsonl         one line per certificate issued (device, key id, validity)
    revocations.json     devices revoked, with time and reason (the ledger takes these
                         on chain as registry transactions)

Certificates are CWTs signed by the registrar key (`edge.portable.cwt`).  A device key
is generated here, or only its public key is imported (a secure element keeps its
private key and signs on the device).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge import crypto
from edge.portable import batch as batch_mod
from edge.portable import cwt
from edge.portable.errors import LocalProtocolError
from gridledger.files import write_private

KEY_FILE = "registrar.key"
PUB_FILE = "registrar.pub"
INFO_FILE = "registrar.json"
ISSUED_FILE = "issued.jsonl"
REVOCATIONS_FILE = "revocations.json"
DEFAULT_VALIDITY_DAYS = 730
MAX_VALIDITY_DAYS = 36500
SECONDS_PER_DAY = 86400
# A batch issuance holds every new key in memory (~1 KiB a device with its certificate).
ISSUE_MANY_MAX = 1_000_000


class RegistrarError(LocalProtocolError):
    code = "certs.registrar"


@dataclass(frozen=True)
class Issued:
    certificate: bytes
    claims: cwt.DeviceCertificate
    device_key: crypto.SigningKey | None


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Registrar:
    """A registrar directory, opened for issuing and revoking."""

    def __init__(self, directory: Path, key: crypto.SigningKey, name: str) -> None:
        self.directory = directory
        self.key = key
        self.name = name

    @property
    def public_key(self) -> bytes:
        return self.key.public_key()

    @property
    def key_id(self) -> bytes:
        return cwt.key_id(self.public_key)

    # -- creation and loading ----------------------------------------------------------

    @classmethod
    def init(cls, directory: Path, name: str = "registrar") -> Registrar:
        if (directory / KEY_FILE).exists():
            raise RegistrarError(f"{directory / KEY_FILE} exists: refusing to replace a key")
        directory.mkdir(parents=True, exist_ok=True)
        key = crypto.SigningKey.generate()
        crypto.write_private_key(directory / KEY_FILE, key)
        (directory / PUB_FILE).write_bytes(crypto.public_key_to_pem(key.public_key()))
        info = {"name": name, "key_id": cwt.key_id(key.public_key()).hex()}
        _write_text(directory / INFO_FILE, json.dumps(info, indent=2) + "\n")
        _write_text(directory / REVOCATIONS_FILE, "[]\n")
        return cls(directory, key, name)

    @classmethod
    def open(cls, directory: Path) -> Registrar:
        key_path = directory / KEY_FILE
        if not key_path.exists():
            raise RegistrarError(f"{directory} is not a registrar directory (no {KEY_FILE}); "
                                 "create one with `gridledger certs init --dir DIR`")
        info = json.loads((directory / INFO_FILE).read_text())
        return cls(directory, crypto.read_private_key(key_path), str(info["name"]))

    # -- certificates ------------------------------------------------------------------

    def issue(
        self,
        device_id: str,
        now_s: int,
        public_key: bytes | None = None,
        meters: tuple[str, ...] = (),
        days: int = DEFAULT_VALIDITY_DAYS,
    ) -> Issued:
        """Certify `public_key`, or a newly generated device key when none is given."""
        issued = self._certify(device_id, now_s, public_key, meters, days)
        self._log_issued([issued])
        return issued

    def issue_many(
        self,
        device_ids: list[str],
        now_s: int,
        meters_of: Callable[[str], tuple[str, ...]] = lambda _device_id: (),
        days: int = DEFAULT_VALIDITY_DAYS,
    ) -> list[Issued]:
        """Certify a new key for each of `device_ids` in one operation: the same checks
        and certificates as `issue`, one append to issued.jsonl for the whole batch.
        At most ISSUE_MANY_MAX devices, so a typo cannot fill the disk."""
        if not 0 < len(device_ids) <= ISSUE_MANY_MAX:
            raise RegistrarError(f"a batch issues 1..{ISSUE_MANY_MAX} certificates")
        if len(set(device_ids)) != len(device_ids):
            raise RegistrarError("device ids in a batch must be distinct")
        issued = [self._certify(d, now_s, None, meters_of(d), days) for d in device_ids]
        self._log_issued(issued)
        return issued

    def _certify(
        self, device_id: str, now_s: int, public_key: bytes | None, meters: tuple[str, ...],
        days: int,
    ) -> Issued:
        if not batch_mod.valid_id(device_id):
            raise RegistrarError("device id must be 1..64 of [A-Za-z0-9._:-]")
        for serial in meters:
            if not batch_mod.valid_id(serial):
                raise RegistrarError(f"meter serial {serial!r} must be 1..64 of [A-Za-z0-9._:-]")
        if not 0 < days <= MAX_VALIDITY_DAYS:
            raise RegistrarError(f"--days must be 1..{MAX_VALIDITY_DAYS}")
        device_key = None
        if public_key is None:
            device_key = crypto.SigningKey.generate()
            public_key = device_key.public_key()
        claims = cwt.DeviceCertificate(
            self.name, device_id, public_key, now_s, now_s + days * SECONDS_PER_DAY, list(meters)
        )
        certificate = cwt.issue(claims, self.public_key, self.key.sign)
        return Issued(certificate, claims, device_key)

    def _log_issued(self, issued: list[Issued]) -> None:
        lines = []
        for item in issued:
            entry = {
                "device_id": item.claims.device_id,
                "certificate_sha256": hashlib.sha256(item.certificate).hexdigest(),
                "issued_at": item.claims.issued_at,
                "expires_at": item.claims.expires_at,
                "meters": item.claims.meters,
            }
            lines.append(json.dumps(entry, sort_keys=True) + "\n")
        with open(self.directory / ISSUED_FILE, "a") as handle:
            handle.write("".join(lines))

    # -- revocation --------------------------------------------------------------------

    def revocations(self) -> list[dict[str, object]]:
        return read_revocations(self.directory)

    def revoke(self, device_id: str, now_s: int, reason: str = "") -> bool:
        """Record a revocation; False when the device was already revoked."""
        entries = self.revocations()
        if any(entry["device_id"] == device_id for entry in entries):
            return False
        entries.append({"device_id": device_id, "revoked_at": now_s, "reason": reason})
        _write_text(self.directory / REVOCATIONS_FILE, json.dumps(entries, indent=2) + "\n")
        return True


def read_revocations(directory: Path) -> list[dict[str, object]]:
    path = directory / REVOCATIONS_FILE
    if not path.exists():
        return []
    entries = json.loads(path.read_text())
    if not isinstance(entries, list):
        raise RegistrarError(f"{path}: expected a JSON list")
    return entries


def revoked_devices(directory: Path) -> set[str]:
    return {str(entry["device_id"]) for entry in read_revocations(directory)}


def registrar_public_key(directory: Path) -> bytes:
    """The registrar public key of a registrar directory (only registrar.pub is needed)."""
    path = directory / PUB_FILE
    if not path.exists():
        raise RegistrarError(f"{directory} has no {PUB_FILE}")
    return crypto.public_key_from_pem(path.read_bytes(), str(path))


# -- identity bundles --------------------------------------------------------------------
#
# A batch issuance writes one file instead of two per device: JSON Lines, a header line
#     {"format": "gridledger-identities", "version": 1, "registrar": NAME,
#      "key_id": HEX, "count": N}
# then one line per device
#     {"device_id": ID, "key": HEX (32-byte P-256 secret), "certificate": HEX (CWT),
#      "meters": [SERIAL, ...]}
# It holds private keys: written 0600 through `gridledger.files.write_private`, never
# logged, never committed.

BUNDLE_FORMAT = "gridledger-identities"
BUNDLE_VERSION = 1


@dataclass(frozen=True)
class Identity:
    device_id: str
    key: crypto.SigningKey
    certificate: bytes
    meters: tuple[str, ...]


def write_bundle(path: Path, registrar: Registrar, issued: list[Issued]) -> None:
    header = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "registrar": registrar.name,
              "key_id": registrar.key_id.hex(), "count": len(issued)}
    lines = [json.dumps(header, sort_keys=True)]
    for item in issued:
        if item.device_key is None:
            raise RegistrarError(f"{item.claims.device_id}: no private key to bundle")
        lines.append(json.dumps({
            "device_id": item.claims.device_id, "key": item.device_key.to_bytes().hex(),
            "certificate": item.certificate.hex(), "meters": item.claims.meters,
        }, sort_keys=True))
    write_private(path, ("\n".join(lines) + "\n").encode())


def read_bundle(path: Path) -> list[Identity]:
    """The identities of a bundle; RegistrarError (certs.bundle) naming the line if bad."""
    try:
        lines = path.read_text().splitlines()
        header = json.loads(lines[0]) if lines else {}
    except (OSError, UnicodeError, json.JSONDecodeError) as exc:
        raise RegistrarError(f"{path}: not an identity bundle ({exc})", "certs.bundle") from None
    if header.get("format") != BUNDLE_FORMAT or header.get("version") != BUNDLE_VERSION:
        raise RegistrarError(f"{path}: not a {BUNDLE_FORMAT} v{BUNDLE_VERSION} file",
                             "certs.bundle")
    identities = [_identity(path, number, line) for number, line in enumerate(lines[1:], 2)]
    if len(identities) != header.get("count"):
        raise RegistrarError(f"{path}: header says {header.get('count')} identities, "
                             f"file holds {len(identities)}", "certs.bundle")
    return identities


def _identity(path: Path, number: int, line: str) -> Identity:
    try:
        row = json.loads(line)
        return Identity(str(row["device_id"]), crypto.SigningKey.from_bytes(
            bytes.fromhex(row["key"])), bytes.fromhex(row["certificate"]),
            tuple(str(m) for m in row["meters"]))
    except (KeyError, TypeError, ValueError, LocalProtocolError) as exc:
        raise RegistrarError(f"{path}:{number}: bad identity line ({type(exc).__name__})",
                             "certs.bundle") from None
