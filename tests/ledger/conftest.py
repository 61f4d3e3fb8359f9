"""Seeded randomness for the ledger tests; a failing test reports the seed to replay it."""

from __future__ import annotations

import random
from collections.abc import Generator
from typing import Any

import pytest

from tests.ledger.seeding import SEED


@pytest.fixture
def rng() -> random.Random:
    return random.Random(SEED)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, Any]:
    report = yield
    if report.failed:
        report.sections.append(("seed", f"replay with GL_SEED={SEED}"))
    return report
