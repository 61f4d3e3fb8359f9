"""`gridledger customers set/show`: class II customer records, managed on the node itself.

`set` reads the fields as JSON `{"name", "address", "contract"}` from standard input (so
they never appear on the command line, where `ps` and shell history would see them),
seals them into DATA_DIR/customers.sqlite with the key file, signs a customer record
(tx kind 5: meter, salted digest, time) with the node's key and posts it to a node's
`/v1/registry`; the sealed row is written only when the node admitted the transaction.
`show` decrypts a meter's record and prints it with its salt, its digest and the digest
the chain holds, so the two can be compared.  Nothing here prints or logs the fields
except `show`, on request.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from aggregator import node as node_mod
from aggregator import tx as tx_mod
from certs.cli import submit_registry
from edge.crypto import read_private_key
from gridledger import genesis as genesis_mod
from gridledger.output import SubParsers, command_group

from .confidential import CustomerFields, check_digest
from .customers import CustomerStore
from .errors import ConfidentialError
from .ledger import LedgerReader

FIELDS_BYTES_MAX = 4096  # as the API's customer body: 896 characters of UTF-8


def register(sub: SubParsers, name: str, help_text: str) -> None:
    commands = command_group(sub, name, help_text)
    p = commands.add_parser(
        "set", help="write a meter's customer record; its salted digest goes on chain",
        description="Seal a meter's customer fields (JSON on standard input) and submit "
        "their salted digest, signed by this node, to the chain.",
        epilog="example: printf '%%s' '{\"name\": \"A. Resident\", \"address\": \"1 Main St\", "
        "\"contract\": \"C-17\"}' | gridledger customers set --data-dir data "
        "--customer-keys /etc/gridledger/customer.keys --meter SDM630-17 "
        "--node http://127.0.0.1:8080")
    _common(p)
    p.add_argument("--node", required=True, metavar="URL", help="a node of the chain")
    p.set_defaults(func=cmd_set)
    p = commands.add_parser("show", help="a meter's customer record and its digest on chain",
                            description="Decrypt a meter's customer record and compare its "
                            "digest with the one on chain.")
    _common(p)
    p.set_defaults(func=cmd_show)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", required=True, type=Path, help="node data directory")
    p.add_argument("--customer-keys", required=True, type=Path, metavar="FILE",
                   help="the key file (0600), kept outside the data directory")
    p.add_argument("--meter", required=True, metavar="SERIAL")


def read_fields() -> CustomerFields:
    raw = sys.stdin.read(FIELDS_BYTES_MAX + 1)
    if len(raw.encode()) > FIELDS_BYTES_MAX:
        raise ConfidentialError(f"customer fields over {FIELDS_BYTES_MAX} bytes")
    try:
        found = json.loads(raw)
    except ValueError:
        raise ConfidentialError("customer fields must be JSON") from None
    if not isinstance(found, dict) or set(found) != {"name", "address", "contract"}:
        raise ConfidentialError('customer fields are {"name", "address", "contract"}')
    fields = CustomerFields(found["name"], found["address"], found["contract"])
    fields.canonical()  # types and lengths, before anything is sealed
    return fields


def _chain_record(data_dir: Path, meter: str) -> list[object] | None:
    genesis = genesis_mod.load(data_dir / node_mod.GENESIS_FILE)
    reader = LedgerReader(data_dir / node_mod.LEDGER_FILE, genesis.chain_id)
    try:
        return reader.record("customer/" + meter)
    finally:
        reader.close()


def cmd_set(args: argparse.Namespace) -> int:
    fields = read_fields()
    node_id = str(json.loads((args.data_dir / node_mod.NODE_FILE).read_text())["node_id"])
    key = read_private_key(args.data_dir / node_mod.KEY_FILE)
    on_chain = _chain_record(args.data_dir, args.meter)
    last_s = -1 if on_chain is None else int(on_chain[2])  # type: ignore[call-overload]
    store = CustomerStore(args.data_dir, args.customer_keys)
    try:
        sealed, digest = store.seal(args.meter, fields)
        record = tx_mod.make_customer(args.meter, digest, max(int(time.time()), last_s + 1),
                                      node_id.encode(), key.sign)
        status = submit_registry(args.node, record, f"customer record of {args.meter}")
        if status == 0:
            store.save(sealed)
            print(f"digest {digest.hex()}  tx {tx_mod.tx_hash(record).hex()}")
    finally:
        store.close()
    return status


def cmd_show(args: argparse.Namespace) -> int:
    store = CustomerStore(args.data_dir, args.customer_keys)
    try:
        fields, salt = store.get(args.meter), store.salt(args.meter)
    finally:
        store.close()
    on_chain = _chain_record(args.data_dir, args.meter)
    chain_digest = None if on_chain is None else on_chain[0]
    matches = isinstance(chain_digest, bytes) and check_digest(fields, salt, chain_digest)
    rows = [("meter", args.meter), ("name", fields.name), ("address", fields.address),
            ("contract", fields.contract), ("salt", salt.hex()),
            ("chain digest", chain_digest.hex() if isinstance(chain_digest, bytes) else "none"),
            ("on chain", "yes" if matches else "no")]
    for label, value in rows:
        print(f"{label:<13} {value}")
    return 0
