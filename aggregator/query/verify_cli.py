"""`gridledger verify RECEIPT --genesis GENESIS`: check a receipt offline.

Trusts only the genesis file: its chain id, registrar key and validators (keys and
voting powers).  The receipt is the JSON bundle of GET /v1/readings/{device}/{seq}/receipt
(`aggregator.query.receipts`), or the same wrapped as SignJson (?format=signjson), whose
node signature is checked against the genesis validators first.  Nothing is fetched:
the command opens no socket.  Exit status 0 when the receipt verifies; otherwise the
first check that failed is printed as `error [receipt.<part>]: ...` with exit status 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge import crypto
from gridledger import genesis as genesis_mod
from gridledger.output import SubParsers, iso_utc, key_value_lines

from . import receipts, tablejson


def register(sub: SubParsers, name: str, help_text: str) -> None:
    p = sub.add_parser(
        name, help=help_text,
        description="Verify a receipt offline against a genesis file: the device signature "
        "and certificate (registrar key), inclusion of each reading in the readings-log root, "
        "the root in the block header, and signatures of validators holding more than 2/3 of "
        "the voting power over that block.",
        epilog="example: gridledger verify receipt.json --genesis genesis.json")
    p.add_argument("receipt", type=Path, metavar="RECEIPT",
                   help="receipt bundle (JSON, or SignJson as ?format=signjson gives it)")
    p.add_argument("--genesis", required=True, type=Path, help="the chain's genesis file")
    p.set_defaults(func=cmd_verify)


def _unwrap(raw: bytes, genesis: genesis_mod.Genesis) -> bytes | Any:
    """The bundle inside a SignJson object (after checking the node's signature)."""
    if len(raw) > receipts.BUNDLE_BYTES_MAX * 2:
        raise receipts.ReceiptFormatError("receipt file too large")
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw  # parse_bundle says what is wrong with it
    if isinstance(doc, dict) and doc.get("Type") == "SignJson":
        return tablejson.verify_sign_json(doc, genesis.node_keys())
    return raw


def cmd_verify(args: argparse.Namespace) -> int:
    genesis = genesis_mod.load(args.genesis)
    bundle = _unwrap(args.receipt.read_bytes(), genesis)
    found = receipts.verify_receipt(bundle, receipts.trust_from_genesis(genesis), crypto.verify)
    rows = [
        ("receipt", "verified"),
        ("chain", genesis.chain_id),
        ("batch", f"{found.device_id}/{found.seq}"),
        ("meters", " ".join(found.meters)),
        ("block", f"{found.height} ({found.block_hash.hex()[:16]})"),
        ("block time", iso_utc(found.block_time_s)),
        ("log", f"size {found.log_size}, root {found.log_root.hex()[:16]}"),
        ("commit", f"{', '.join(found.signers)}: power {found.signed_power} of "
                   f"{found.total_power}"),
    ]
    print(key_value_lines(rows))
    return 0
