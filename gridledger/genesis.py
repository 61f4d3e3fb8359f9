"""The genesis file: everything a participant must trust, in one JSON document.

A chain is fixed by its genesis: chain id, the registrar public key (device identity),
the validators (node id, public key, voting power, addresses), the consensus engine and
the block limits.  Gateways read it for the node keys whose receipts they accept; nodes
for everything; a verifier of receipts needs nothing else.

    {
      "format": "gridledger-genesis/1",
      "chain_id": "gl-local",
      "genesis_time": 1763760000,
      "registrar": {"name": "...", "public_key": "04..."},
      "validators": [{"node_id": "node-0", "public_key": "04...", "power": 1,
                      "peer": "127.0.0.1:26656", "coap": "127.0.0.1:5683",
                      "http": "127.0.0.1:8080"}],
      "consensus": {"engine": "solo"},
      "block_limits": {"max_txs": 2000, "max_bytes": 4194304, "timeout_ms": 200}
    }

Public keys are the 65-byte uncompressed P-256 points in hex.  The genesis hash (SHA-256
of the canonical JSON: sorted keys, no spaces) names the chain unambiguously.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.portable import p256
from edge.portable.batch import valid_id
from edge.portable.errors import LocalProtocolError

FORMAT = "gridledger-genesis/1"
ENGINES = ("solo", "tendermint")
MAX_VALIDATORS = 64


class GenesisError(LocalProtocolError):
    code = "genesis.invalid"


@dataclass(frozen=True)
class Validator:
    node_id: str
    public_key: bytes
    power: int = 1
    peer: str = ""
    coap: str = ""
    http: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "public_key": self.public_key.hex(),
                "power": self.power, "peer": self.peer, "coap": self.coap, "http": self.http}


@dataclass(frozen=True)
class BlockLimits:
    max_txs: int = 2000
    max_bytes: int = 4 * 1024 * 1024
    timeout_ms: int = 200


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    genesis_time: int
    registrar_name: str
    registrar_public_key: bytes
    validators: tuple[Validator, ...]
    engine: str = "solo"
    block_limits: BlockLimits = field(default_factory=BlockLimits)

    def node_keys(self) -> dict[str, bytes]:
        return {v.node_id: v.public_key for v in self.validators}

    def validator(self, node_id: str) -> Validator:
        for v in self.validators:
            if v.node_id == node_id:
                return v
        raise GenesisError(f"node {node_id!r} is not a validator of {self.chain_id}")

    def to_json(self) -> dict[str, Any]:
        limits = self.block_limits
        return {
            "format": FORMAT,
            "chain_id": self.chain_id,
            "genesis_time": self.genesis_time,
            "registrar": {"name": self.registrar_name,
                          "public_key": self.registrar_public_key.hex()},
            "validators": [v.to_json() for v in self.validators],
            "consensus": {"engine": self.engine},
            "block_limits": {"max_txs": limits.max_txs, "max_bytes": limits.max_bytes,
                             "timeout_ms": limits.timeout_ms},
        }

    def canonical_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    def hash(self) -> bytes:
        return hashlib.sha256(self.canonical_bytes()).digest()

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def _key(text: object, what: str) -> bytes:
    try:
        raw = bytes.fromhex(str(text))
        p256.decode_public_key(raw)
    except (ValueError, LocalProtocolError):
        raise GenesisError(f"{what}: not a P-256 public key in hex") from None
    return raw


def _validator(doc: dict[str, Any]) -> Validator:
    node_id = doc.get("node_id")
    if not valid_id(node_id):
        raise GenesisError(f"validator id {node_id!r} is not a valid id")
    power = doc.get("power", 1)
    if not isinstance(power, int) or not 0 < power <= 1000:
        raise GenesisError(f"validator {node_id}: power must be 1..1000")
    return Validator(str(node_id), _key(doc.get("public_key"), f"validator {node_id}"), power,
                     str(doc.get("peer", "")), str(doc.get("coap", "")), str(doc.get("http", "")))


def from_json(doc: Any) -> Genesis:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise GenesisError(f"not a genesis file (format must be {FORMAT!r})")
    try:
        validators = tuple(_validator(v) for v in doc["validators"])
        registrar = doc["registrar"]
        limits = BlockLimits(**doc.get("block_limits", {}))
        genesis = Genesis(
            chain_id=str(doc["chain_id"]),
            genesis_time=int(doc["genesis_time"]),
            registrar_name=str(registrar["name"]),
            registrar_public_key=_key(registrar["public_key"], "registrar"),
            validators=validators,
            engine=str(doc.get("consensus", {}).get("engine", "solo")),
            block_limits=limits,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise GenesisError(f"genesis is missing or mistypes {exc}") from None
    _check(genesis)
    return genesis


def _check(genesis: Genesis) -> None:
    if not valid_id(genesis.chain_id):
        raise GenesisError("chain id must be 1..64 of [A-Za-z0-9._:-]")
    if not 0 < len(genesis.validators) <= MAX_VALIDATORS:
        raise GenesisError(f"a chain has 1..{MAX_VALIDATORS} validators")
    if len({v.node_id for v in genesis.validators}) != len(genesis.validators):
        raise GenesisError("validator ids must be unique")
    if genesis.engine not in ENGINES:
        raise GenesisError(f"consensus engine must be one of {', '.join(ENGINES)}")
    if genesis.engine == "solo" and len(genesis.validators) != 1:
        raise GenesisError("the solo engine runs exactly one validator")


def load(path: Path) -> Genesis:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise GenesisError(f"{path}: not JSON ({exc})") from None
    return from_json(doc)
