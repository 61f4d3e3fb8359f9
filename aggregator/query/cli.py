"""`gridledger accounts ...`: accounts of the query API, managed on the node itself.

The password is read from standard input (without echo on a terminal) and is never
printed, logged or passed on the command line, where `ps` and shell history would see it.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path

from gridledger.output import SubParsers, command_group, iso_utc

from .accounts import ROLES, AccountStore
from .errors import WeakPasswordError


def register(sub: SubParsers, name: str, help_text: str) -> None:
    commands = command_group(sub, name, help_text)
    _add_add(commands)
    _add_list(commands)
    _add_remove(commands)


def _add_add(commands: SubParsers) -> None:
    p = commands.add_parser(
        "add",
        help="create an account (password on standard input)",
        description="Create an account of the query API. The password is read from standard "
        "input: typed twice without echo on a terminal, or the first line of a pipe.",
        epilog="example: printf '%s\\n' \"$PW\" | gridledger accounts add --data-dir data "
        "--username alice --role resident --meter SDM630-17",
    )
    p.add_argument("--data-dir", required=True, type=Path, help="node data directory")
    p.add_argument("--username", required=True, help="1..64 of [A-Za-z0-9._@-]")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--meter", action="append", default=[], metavar="SERIAL",
                   help="a meter the resident owns (repeatable)")
    p.add_argument("--device", action="append", default=[], metavar="ID",
                   help="a device the supplier runs (repeatable)")
    p.set_defaults(func=cmd_add)


def _add_list(commands: SubParsers) -> None:
    p = commands.add_parser("list", help="list accounts (never their password hashes)",
                            description="List the accounts of a node.")
    p.add_argument("--data-dir", required=True, type=Path, help="node data directory")
    p.set_defaults(func=cmd_list)


def _add_remove(commands: SubParsers) -> None:
    p = commands.add_parser("remove", help="delete an account",
                            description="Delete an account; tokens already issued to it stay "
                            "valid until they expire (at most the token lifetime).")
    p.add_argument("--data-dir", required=True, type=Path, help="node data directory")
    p.add_argument("--username", required=True)
    p.set_defaults(func=cmd_remove)


def read_password() -> str:
    """The new password from stdin: twice without echo on a terminal, else one line."""
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise WeakPasswordError("the two passwords differ")
        return first
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def cmd_add(args: argparse.Namespace) -> int:
    password = read_password()
    store = AccountStore(args.data_dir)
    try:
        account = store.add(args.username, args.role, password, int(time.time()),
                            tuple(args.meter), tuple(args.device))
    finally:
        store.close()
    print(f"account {account.username} ({account.role}) added to {store.path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    store = AccountStore(args.data_dir, create=False)
    try:
        accounts = store.list()
    finally:
        store.close()
    rows = [("USERNAME", "ROLE", "CREATED", "METERS / DEVICES")]
    rows += [(a.username, a.role, iso_utc(a.created_at_s), ", ".join(a.meters + a.devices))
             for a in accounts]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) +
              "  " + row[3])
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    store = AccountStore(args.data_dir, create=False)
    try:
        store.remove(args.username)
    finally:
        store.close()
    print(f"account {args.username} removed")
    return 0
