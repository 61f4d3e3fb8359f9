"""Class II records at rest: sealed customer fields in DATA_DIR/customers.sqlite.

The database holds only `Sealed` records (aggregator/query/confidential.py); the keys are
in a separate key file, so a copy of the database (a backup, a stolen disk image of the
data directory) reveals nothing without it.  Keep the key file on another path than the
data directory in production, e.g. /etc/gridledger/customer.keys, and back it up apart.

    put(record_id, fields) -> digest     seal with the newest key, new salt; the digest
                                         is what a transaction puts on chain
    seal(record_id, fields) -> (sealed, digest)   the same in two steps, so the API can
    save(sealed)                         write only once the chain tx was admitted
    get(record_id) -> fields             decrypt (any key of the ring)
    salt(record_id)                      shown with the fields to an entitled reader, so
                                         they can check them against the chain
    reseal_all() -> count                after `rotate_key_file`: every record under the
                                         newest key, salts (and so digests) unchanged

Storage: SQLite, WAL, synchronous=FULL, mode 0600; one row per record id.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from gridledger.files import open_private_sqlite

from . import confidential as conf
from .confidential import CustomerFields, RandomBytes, Sealed
from .errors import ConfidentialError

DB_NAME = "customers.sqlite"


class CustomerStore:
    def __init__(self, data_dir: Path, key_file: Path,
                 random_bytes: RandomBytes = os.urandom) -> None:
        if not key_file.exists():
            conf.write_key_file(key_file, conf.new_key_ring(random_bytes))
        self.ring = conf.read_key_file(key_file)
        self.key_file = key_file
        self.path = data_dir / DB_NAME
        self._random_bytes = random_bytes
        self._lock = threading.Lock()
        self._db = open_private_sqlite(self.path)
        self._db.execute("CREATE TABLE IF NOT EXISTS customers "
                         "(record_id TEXT PRIMARY KEY, sealed BLOB NOT NULL)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def reload_keys(self) -> None:
        """Read the key file again, after a rotation by another process."""
        self.ring = conf.read_key_file(self.key_file)

    def put(self, record_id: str, fields: CustomerFields) -> bytes:
        """Seal and store; return the salted digest the chain holds."""
        sealed, digest = self.seal(record_id, fields)
        self.save(sealed)
        return digest

    def seal(self, record_id: str, fields: CustomerFields) -> tuple[Sealed, bytes]:
        """Seal under the newest key with a new salt, without storing; and the digest."""
        sealed = conf.seal(self.ring, record_id, fields, self._random_bytes)
        return sealed, sealed.digest(fields)

    def save(self, sealed: Sealed) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO customers VALUES (?, ?)",
                             (sealed.record_id, sealed.to_bytes()))

    def _sealed(self, record_id: str) -> Sealed:
        with self._lock:
            row = self._db.execute("SELECT sealed FROM customers WHERE record_id = ?",
                                   (record_id,)).fetchone()
        if row is None:
            raise ConfidentialError(f"no customer record {record_id!r}")
        sealed = Sealed.from_bytes(row[0])
        if sealed.record_id != record_id:
            raise ConfidentialError(f"row {record_id!r} holds record {sealed.record_id!r}")
        return sealed

    def get(self, record_id: str) -> CustomerFields:
        return conf.unseal(self.ring, self._sealed(record_id))

    def salt(self, record_id: str) -> bytes:
        return self._sealed(record_id).salt

    def remove(self, record_id: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM customers WHERE record_id = ?", (record_id,))
        return cursor.rowcount == 1

    def reseal_all(self) -> int:
        """Re-encrypt every record not under the newest key; return how many changed."""
        with self._lock:
            record_ids = [r[0] for r in self._db.execute("SELECT record_id FROM customers")]
        changed = 0
        for record_id in record_ids:
            sealed = self._sealed(record_id)
            resealed = conf.reseal(self.ring, sealed, self._random_bytes)
            if resealed is not sealed:
                with self._lock:
                    self._db.execute("UPDATE customers SET sealed = ? WHERE record_id = ?",
                                     (resealed.to_bytes(), record_id))
                changed += 1
        return changed
