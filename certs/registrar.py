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
from dataclasses import dataclass
from pathlib import Path

from edge import crypto
from edge.portable import batch as batch_mod
from edge.portable import cwt
from edge.portable.errors import LocalProtocolError

KEY_FILE = "registrar.key"
PUB_FILE = "registrar.pub"
INFO_FILE = "registrar.json"
ISSUED_FILE = "issued.jsonl"
REVOCATIONS_FILE = "revocations.json"
DEFAULT_VALIDITY_DAYS = 730
MAX_VALIDITY_DAYS = 36500
SECONDS_PER_DAY = 86400


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
        self._log_issued(claims, certificate)
        return Issued(certificate, claims, device_key)

    def _log_issued(self, claims: cwt.DeviceCertificate, certificate: bytes) -> None:
        entry = {
            "device_id": claims.device_id,
            "certificate_sha256": hashlib.sha256(certificate).hexdigest(),
            "issued_at": claims.issued_at,
            "expires_at": claims.expires_at,
            "meters": claims.meters,
        }
        with open(self.directory / ISSUED_FILE, "a") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")

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
