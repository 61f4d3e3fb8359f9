"""Small helpers the command-line tools share: printing and argparse typing."""

from __future__ import annotations

import argparse
import datetime
from typing import TYPE_CHECKING


def iso_utc(seconds: int | float) -> str:
    """Unix seconds as an ISO 8601 UTC timestamp, e.g. 2026-11-21T22:41:39Z."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def key_value_lines(rows: list[tuple[str, str]]) -> str:
    """Aligned `key   value` lines."""
    width = max((len(key) for key, _ in rows), default=0)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)


def describe_validity(issued_at_s: int, expires_at_s: int, now_s: int) -> str:
    day_s = 86400
    if now_s < issued_at_s:
        return f"NOT YET VALID (valid from {iso_utc(issued_at_s)})"
    if now_s >= expires_at_s:
        return f"EXPIRED {(now_s - expires_at_s) // day_s} days ago"
    return f"valid now (expires in {(expires_at_s - now_s) // day_s} days)"


if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    SubParsers = argparse._SubParsersAction


def command_group(sub: SubParsers, name: str, help_text: str) -> SubParsers:
    """Add the group `gridledger NAME` and return the place for its commands."""
    parser = sub.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
