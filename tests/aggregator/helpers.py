"""Builders for the aggregator tests: keys, certificates, signed batches, statements."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aggregator import tx
from aggregator.app import AppConfig, Application, FinalizeRequest, FinalizeResult
from aggregator.engine import EngineLimits, MemoryBlockStore, NodeSigner, SoloEngine
from aggregator.store import Store
from edge import crypto
from edge.portable import batch as batch_mod
from edge.portable import cwt
from edge.portable.batch import Batch, MeterGroup, Record

CHAIN_ID = "gl-test"
T0 = 1_763_760_000
GENESIS_HASH = bytes(32)
NODE_ID = "node-0"
PROFILE = "abb_b23"
# A slice of the abb_b23 profile, as AppConfig.profiles holds it.
PROFILES = {
    PROFILE: {
        "1-0:1.8.0": (0.0, 3.6e15),
        "1-0:2.8.0": (0.0, 3.6e15),
        "1-0:32.7.0": (0.0, 300.0),
        "1-0:14.7.0": (45.0, 65.0),
    }
}


def key(index: int) -> crypto.SigningKey:
    return crypto.SigningKey.from_bytes(bytes([index + 1]) * 32)


class World:
    """A registrar, a node key and any number of devices with deterministic keys."""

    def __init__(self) -> None:
        self.registrar = key(200)
        self.node = key(201)
        self.config = AppConfig(CHAIN_ID, self.registrar.public_key(), crypto.verify, PROFILES,
                                {NODE_ID: self.node.public_key()})

    def device_key(self, device_id: str) -> crypto.SigningKey:
        return key(sum(device_id.encode()) % 190)

    def cert(
        self,
        device_id: str,
        meters: Sequence[str] = ("M1", "M2"),
        iat: int = T0 - 86400,
        exp: int = T0 + 365 * 86400,
    ) -> bytes:
        claims = cwt.DeviceCertificate(
            "reg", device_id, self.device_key(device_id).public_key(), iat, exp, list(meters)
        )
        return cwt.issue(claims, self.registrar.public_key(), self.registrar.sign)

    def message(
        self,
        device_id: str,
        seq: int,
        energy: int = 1000,
        voltage: float = 230.0,
        sent_at: int = T0,
        meters: Sequence[str] = ("M1",),
        kcwt: bool = True,
        synced: bool = True,
    ) -> bytes:
        groups = [
            MeterGroup(
                m,
                sent_at - 1,
                [
                    Record("1-0:1.8.0", energy, "J"),
                    Record("1-0:32.7.0", voltage, "V"),
                ],
            )
            for m in meters
        ]
        batch = Batch(device_id, seq, sent_at, synced, groups)
        kcwt_bytes = self.cert(device_id) if kcwt else None
        return batch_mod.sign(batch, self.device_key(device_id).sign, kcwt_bytes)

    def batch_tx(self, device_id: str, seq: int, **kw: object) -> bytes:
        return tx.encode(tx.BATCH, self.message(device_id, seq, **kw))  # type: ignore[arg-type]

    def enroll_tx(
        self,
        device_id: str,
        profiles: dict[str, str] | None = None,
        time_s: int = T0,
        cert: bytes | None = None,
    ) -> bytes:
        certificate = cert if cert is not None else self.cert(device_id)
        return tx.make_enrollment(
            certificate, profiles or {}, time_s, self.registrar.public_key(), self.registrar.sign
        )

    def revoke_tx(self, device_id: str, time_s: int = T0, reason: str = "stolen") -> bytes:
        return tx.make_revocation(
            device_id, time_s, reason, self.registrar.public_key(), self.registrar.sign
        )

    def app(self) -> Application:
        return Application(self.config)

    def engine(
        self,
        app: Application | None = None,
        limits: EngineLimits | None = None,
        store: MemoryBlockStore | None = None,
    ) -> SoloEngine:
        return SoloEngine(
            app or self.app(),
            store or MemoryBlockStore(),
            NodeSigner(NODE_ID, self.node.sign),
            GENESIS_HASH,
            T0,
            limits,
        )


def run_block(app: Application, txs: Sequence[bytes], time_s: int = T0) -> FinalizeResult:
    """Finalize and commit one block of `txs`."""
    request = FinalizeRequest(app.state.height + 1, time_s, tuple(txs), NODE_ID)
    result = app.finalize_block(request)
    app.commit()
    return result


def open_store(path: Path, world: World) -> Store:
    """A Store for `world`'s chain at `path`, verified on open."""
    validators = {NODE_ID: (world.node.public_key(), 1)}
    return Store.open(path, CHAIN_ID, GENESIS_HASH, validators, crypto.verify)


def stored_engine(path: Path, world: World, limits: EngineLimits | None = None) -> SoloEngine:
    """A solo engine over a SQLite store, the application loaded from it."""
    store = open_store(path, world)
    app = Application(world.config, store.load_state(), store.nodes)
    signer = NodeSigner(NODE_ID, world.node.sign)
    return SoloEngine(app, store, signer, GENESIS_HASH, T0, limits)
