"""The local cluster's port choice: ports chosen together never repeat."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.cluster import local


class _Reused:
    """A socket whose bind(port 0) hands out ports from a fixed list, as a kernel may
    hand a just-released port out again."""

    ports: Iterator[int] = iter(())

    def __init__(self, *args: object) -> None:
        self._port = 0

    def __enter__(self) -> _Reused:
        return self

    def __exit__(self, *args: object) -> None:
        return None

    def bind(self, address: tuple[str, int]) -> None:
        self._port = next(self.ports)

    def getsockname(self) -> tuple[str, int]:
        return (local.LOOPBACK, self._port)


def test_a_port_handed_out_again_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    _Reused.ports = iter([41000, 41000, 41000, 41001, 41000])
    monkeypatch.setattr(local.socket, "socket", _Reused)
    taken: set[int] = set()
    assert [local.free_port(taken=taken), local.free_port(socket.SOCK_DGRAM, taken)] == [
        41000, 41001]
    assert taken == {41000, 41001}
    assert local.free_port() == 41000  # without `taken`, whatever the kernel says


def test_a_cluster_description_has_no_port_twice(tmp_path: Path) -> None:
    cluster = local.create(tmp_path / "c", 4, proxied=frozenset({1}))
    ports = [int(entry[k].rsplit(":", 1)[1]) for entry in cluster["nodes"]
             for k in ("coap", "http", "peer", "mqtt")]
    ports += [int(cluster["nodes"][1]["peer_listen"].rsplit(":", 1)[1])]
    assert len(ports) == len(set(ports))
