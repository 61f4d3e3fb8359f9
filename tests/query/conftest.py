"""Fixtures for the query-side tests: seeded randomness, a fixed clock, cheap scrypt."""

from __future__ import annotations

import os
import random

import pytest

from aggregator.query.accounts import ScryptParams

SEED = int(os.environ.get("GL_SEED", "20261121"))
NOW_S = 1_790_000_000

# Tests only: N = 2^4 keeps each hash under a millisecond; the default stays N = 2^15.
CHEAP_SCRYPT = ScryptParams(log_n=4, r=8, p=1)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(SEED)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One real node with the query API and the fixture world's batches committed."""
    from tests.query.live import LiveNode, populate

    node = LiveNode(tmp_path_factory.mktemp("live")).start()
    try:
        populate(node)
        yield node
    finally:
        node.stop()
