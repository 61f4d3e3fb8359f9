"""Fixtures for the fleet tests: a registrar with issued identities, a node key for
signing receipts, and a seed printed so that a failure can be replayed."""

from __future__ import annotations

import os
import random

import pytest

from certs.registrar import Identity, Registrar
from edge import crypto

NODE_KEY = crypto.SigningKey.from_bytes(bytes(range(11, 43)))  # test key, not a secret
NODE_ID = "node-0"
NOW_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("GL_SEED", random.SystemRandom().randrange(1 << 30)))
    print(f"seed={value} (replay with GL_SEED={value})")
    return value


@pytest.fixture(scope="session")
def registrar(tmp_path_factory: pytest.TempPathFactory) -> Registrar:
    return Registrar.init(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def identities(registrar: Registrar) -> list[Identity]:
    ids = [f"gw-t{n}" for n in range(8)]
    issued = registrar.issue_many(ids, int(NOW_S) - 60, lambda d: (d + ".m1", d + ".m2"))
    out = []
    for item in issued:
        assert item.device_key is not None
        out.append(Identity(item.claims.device_id, item.device_key, item.certificate,
                            tuple(item.claims.meters)))
    return out


def node_keys() -> dict[str, bytes]:
    return {NODE_ID: NODE_KEY.public_key()}


