"""The pure part of the validators' heads: a status answer parses or gives None."""

from __future__ import annotations

import asyncio
import json

from aggregator.query.peers import PeerHeads, parse_status, split_address


def _answer(status: object, line: bytes = b"HTTP/1.1 200 OK") -> bytes:
    return line + b"\r\ncontent-type: application/json\r\n\r\n" + json.dumps(status).encode()


def test_a_status_answer_gives_height_and_hash() -> None:
    assert parse_status(_answer({"height": 7, "last_block_hash": "ab" * 32})) == (7, "ab" * 32)


def test_anything_else_is_none() -> None:
    for raw in (b"", b"HTTP/1.1 200 OK\r\n", _answer({"height": 1}, b"HTTP/1.1 503 Busy"),
                _answer([1, 2]), _answer({"height": -1}), _answer({"height": True}),
                _answer({"height": 1, "last_block_hash": "x" * 65}),
                b"HTTP/1.1 200 OK\r\n\r\n{not json", _answer({"height": "7"})):
        assert parse_status(raw) is None, raw


def test_addresses() -> None:
    assert split_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    for bad in ("", "host", ":80", "h:0", "h:65536", "h:x"):
        assert split_address(bad) is None


def test_an_unreachable_validator_is_shown_as_such() -> None:
    from tests.ports import free_port

    heads = PeerHeads([("node-1", f"127.0.0.1:{free_port()}"), ("node-2", "nowhere")])
    found = asyncio.run(heads.heads(100.0))
    assert found == {"node-1": (None, False), "node-2": (None, False)}
