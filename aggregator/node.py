"""A node's data directory: create it, open it, and assemble application, store and engine.

    DIR/genesis.json   the chain's genesis file (`gridledger.genesis`)
    DIR/node.key       the node's P-256 key, PEM PKCS#8, mode 0600
    DIR/node.json      {"node_id": ...}: which validator of the genesis this node is
    DIR/ledger.sqlite  the ledger (`aggregator.store`), WAL files beside it
    DIR/consensus.wal  the BFT engine's write-ahead log of signed votes (more than one
                       validator in genesis: `aggregator.consensus.engine`)

The engine follows from genesis: one validator is solo, more are the BFT engine.

The network shell (CoAP, MQTT, HTTP) opens a node with `open_node` and feeds its engine;
nothing here listens or reads a clock except `init`, which stamps the genesis time.
Meter profiles are read from `hardware/meters` once, at open: they are part of the
release, and every node of a chain must run the same ones (execution depends on them).
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path

from certs.registrar import INFO_FILE, registrar_public_key
from edge import crypto
from edge.portable.errors import LocalProtocolError
from gridledger import genesis as genesis_mod
from hardware import profiles as profiles_mod

from .app import AppConfig, Application
from .consensus.engine import BftEngine
from .consensus.validators import ValidatorSet
from .consensus.wal import FileWal
from .engine import EngineLimits, NodeSigner, SoloEngine
from .store import Store

GENESIS_FILE = "genesis.json"
KEY_FILE = "node.key"
NODE_FILE = "node.json"
LEDGER_FILE = "ledger.sqlite"
WAL_FILE = "consensus.wal"
DEFAULT_NODE_ID = "node-0"
DEFAULT_PEER = "127.0.0.1:26656"
DEFAULT_COAP = "127.0.0.1:5683"
DEFAULT_HTTP = "127.0.0.1:8080"
GC_THRESHOLDS = (100_000, 50, 100)


def tune_collector() -> None:
    """Set the cyclic garbage collector for a node process, once its ledger is open.

    A node allocates a few hundred short-lived objects per batch; almost all are freed
    by reference counting, yet at CPython's default threshold (700) the collector runs
    every few batches and, every tenth run, walks the whole young heap.  `gc.freeze()`
    moves what opening the node built (the state, every device record) out of the
    collector's sight, and GC_THRESHOLDS lets a young generation grow to 10^5 objects
    (a few MB) before a collection.  `just bench-ingest` measures the effect: about a
    quarter less CPU per batch on the node's loop.  Call it after `open_node`.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class NodeDirError(LocalProtocolError):
    code = "aggregator.data_dir"


@dataclass
class Node:
    genesis: genesis_mod.Genesis
    node_id: str
    app: Application
    store: Store
    engine: SoloEngine

    def close(self) -> None:
        """Close the ledger, and the BFT engine's WAL when there is one."""
        self.store.close()
        if isinstance(self.engine, BftEngine) and isinstance(self.engine.wal, FileWal):
            self.engine.wal.close()


def profile_limits() -> dict[str, dict[str, tuple[float, float]]]:
    """Plausibility limits of every shipped meter profile: name -> OBIS -> (min, max)."""
    limits = {}
    for name in profiles_mod.names():
        profile = profiles_mod.load(name)
        limits[name] = {q.obis: (q.min, q.max) for q in profile.quantities}
    return limits


def init(data_dir: Path, ca_dir: Path, chain_id: str, now_s: int,
         node_id: str = DEFAULT_NODE_ID) -> genesis_mod.Genesis:
    """Create a node key and a solo genesis for the registrar in `ca_dir`."""
    if (data_dir / KEY_FILE).exists() or (data_dir / GENESIS_FILE).exists():
        raise NodeDirError(f"{data_dir} already holds a node; refusing to replace its key")
    registrar_key = registrar_public_key(ca_dir)
    key = crypto.SigningKey.generate()
    validator = genesis_mod.Validator(node_id, key.public_key(), 1, DEFAULT_PEER, DEFAULT_COAP,
                                      DEFAULT_HTTP)
    genesis = genesis_mod.Genesis(chain_id, now_s, _registrar_name(ca_dir), registrar_key,
                                  (validator,))
    genesis_mod.from_json(genesis.to_json())  # the same checks a loader applies
    data_dir.mkdir(parents=True, exist_ok=True)
    crypto.write_private_key(data_dir / KEY_FILE, key)
    (data_dir / NODE_FILE).write_text(json.dumps({"node_id": node_id}, indent=2) + "\n")
    genesis.dump(data_dir / GENESIS_FILE)
    open_node(data_dir).store.close()
    return genesis


def _registrar_name(ca_dir: Path) -> str:
    info = ca_dir / INFO_FILE
    if not info.exists():
        return "registrar"
    return str(json.loads(info.read_text()).get("name", "registrar"))


def open_node(data_dir: Path) -> Node:
    """Open a node directory: verify the stored ledger and build the solo engine."""
    if not (data_dir / GENESIS_FILE).exists():
        raise NodeDirError(f"{data_dir} has no {GENESIS_FILE}; run `gridledger aggregator init`")
    genesis = genesis_mod.load(data_dir / GENESIS_FILE)
    node_id = str(json.loads((data_dir / NODE_FILE).read_text())["node_id"])
    genesis.validator(node_id)
    key = crypto.read_private_key(data_dir / KEY_FILE)
    validators = {v.node_id: (v.public_key, v.power) for v in genesis.validators}
    store = Store.open(data_dir / LEDGER_FILE, genesis.chain_id, genesis.hash(), validators,
                       crypto.verify)
    config = AppConfig(genesis.chain_id, genesis.registrar_public_key, crypto.verify,
                       profile_limits(), genesis.node_keys())
    app = Application(config, store.load_state(), store.nodes)
    limits = genesis.block_limits
    engine_limits = EngineLimits.from_block_limits(limits.max_txs, limits.max_bytes,
                                                   limits.timeout_ms)
    signer = NodeSigner(node_id, key.sign, key.sign_random_nonce)
    engine: SoloEngine
    if len(genesis.validators) == 1:
        engine = SoloEngine(app, store, signer, genesis.hash(), genesis.genesis_time,
                            engine_limits)
    else:
        validator_set = ValidatorSet.of((v.node_id, v.public_key, v.power)
                                        for v in genesis.validators)
        engine = BftEngine(app, store, signer, genesis.hash(), genesis.genesis_time,
                           validator_set, FileWal(data_dir / WAL_FILE), crypto.verify,
                           engine_limits)
    return Node(genesis, node_id, app, store, engine)
