"""A fixed batch of simulation seeds (CI), determinism, and that the checks catch bugs.

Each seed is its own test case, so a failure names it; the message carries the seed and
`python -m aggregator.consensus.sim --seeds N --verbose` replays it event for event.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from aggregator.consensus import core as core_mod
from aggregator.consensus.messages import value_id
from aggregator.consensus.sim import (
    InvariantViolation,
    SimConfig,
    Simulation,
    main,
    parse_seeds,
)
from aggregator.consensus.validators import ValidatorSet
from edge.portable import cbor
from edge.portable.errors import DecodeError

CI_SEEDS = range(1, 41)


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_four_nodes_one_byzantine(seed: int) -> None:
    result = Simulation(SimConfig(seed)).run()
    assert result.liveness == "checked", f"seed {seed}"


@pytest.mark.parametrize("seed", range(1, 7))
def test_seven_nodes_two_byzantine(seed: int) -> None:
    result = Simulation(SimConfig(seed, nodes=7, byzantine=2)).run()
    assert result.liveness == "checked", f"seed {seed}"


@pytest.mark.parametrize("seed", range(1, 9))
def test_weighted_voting_power(seed: int) -> None:
    simulation = Simulation(SimConfig(seed, weighted=True))
    powers = simulation.validators.powers()
    assert 3 * powers["node-3"] < sum(powers.values())  # node-3 is the Byzantine one
    assert simulation.run().liveness == "checked"


def test_weighted_powers_differ() -> None:
    powers = [Simulation(SimConfig(s, weighted=True)).validators.powers() for s in range(1, 9)]
    assert any(len(set(p.values())) > 1 for p in powers)


@pytest.mark.parametrize("seed", range(1, 4))
def test_all_honest_and_a_single_node(seed: int) -> None:
    assert Simulation(SimConfig(seed, byzantine=0)).run().liveness == "checked"
    assert Simulation(SimConfig(seed, nodes=1, byzantine=0)).run().liveness == "checked"


class ChainApp:
    """A stateful application: a block names its predecessor, as the ledger's do."""

    def __init__(self, node_id: str) -> None:
        self.chain: list[bytes] = []

    def _tip(self) -> bytes:
        return value_id(self.chain[-1]) if self.chain else bytes(32)

    def build(self, height: int, rng: random.Random) -> bytes:
        return cbor.encode([height, self._tip(), rng.randbytes(8)])

    def valid(self, height: int, value: bytes) -> bool:
        try:
            obj = cbor.decode(value)
        except DecodeError:
            return False
        return isinstance(obj, list) and obj[:2] == [height, self._tip()]

    def invalid(self, height: int, rng: random.Random) -> bytes:
        return cbor.encode([height, rng.randbytes(32), b""])

    def commit(self, height: int, value: bytes) -> None:
        assert height == len(self.chain) + 1
        self.chain.append(value)


@pytest.mark.parametrize("seed", range(1, 6))
def test_a_stateful_application_swaps_in(seed: int) -> None:
    simulation = Simulation(SimConfig(seed), app_factory=ChainApp)
    assert simulation.run().liveness == "checked"
    chains = [app.chain for app in simulation.apps.values()]  # type: ignore[attr-defined]
    shortest = min(len(c) for c in chains)
    assert len({tuple(c[:shortest]) for c in chains}) == 1


OPAQUE = b"opaque\x00"


def header_identity(value: bytes) -> bytes:
    """A value [header, body] is identified by SHA-256 of its header when the header
    fixes the body (as a ledger block by its header hash), else by its bytes under
    another domain."""
    try:
        obj = cbor.decode(value)
        header = cbor.decode(obj[0])
        if header[2] == hashlib.sha256(obj[1]).digest() and cbor.encode(obj) == value:
            return hashlib.sha256(obj[0]).digest()
    except (DecodeError, TypeError, IndexError, KeyError):
        pass
    return hashlib.sha256(OPAQUE + value).digest()


class HeaderApp(ChainApp):
    """Blocks [header, body], header = [height, predecessor's id, SHA-256(body)]; a
    Byzantine proposer's invalid block reuses a good header with another body."""

    def _tip(self) -> bytes:
        return header_identity(self.chain[-1]) if self.chain else bytes(32)

    def build(self, height: int, rng: random.Random) -> bytes:
        body = rng.randbytes(8)
        header = cbor.encode([height, self._tip(), hashlib.sha256(body).digest()])
        return cbor.encode([header, body])

    def valid(self, height: int, value: bytes) -> bool:
        if header_identity(value) == hashlib.sha256(OPAQUE + value).digest():
            return False
        header = cbor.decode(cbor.decode(value)[0])
        return isinstance(header, list) and header[:2] == [height, self._tip()]

    def invalid(self, height: int, rng: random.Random) -> bytes:
        header = cbor.decode(self.build(height, rng))[0]
        return cbor.encode([header, rng.randbytes(8)])  # the header does not fix this body


@pytest.mark.parametrize("seed", range(1, 6))
def test_an_injected_identity_holds_under_byzantine_proposers(seed: int) -> None:
    simulation = Simulation(SimConfig(seed), app_factory=HeaderApp, identify=header_identity)
    assert simulation.run().liveness == "checked"
    chains = [app.chain for app in simulation.apps.values()]  # type: ignore[attr-defined]
    shortest = min(len(c) for c in chains)
    assert len({tuple(c[:shortest]) for c in chains}) == 1


def test_the_batch_exercises_every_fault() -> None:
    results = [Simulation(SimConfig(seed)).run() for seed in range(1, 6)]
    assert sum(r.crashes for r in results) > 0
    assert sum(r.partitions for r in results) > 0
    assert sum(r.evidence for r in results) > 0  # double votes and equivocating proposals
    assert sum(r.dropped for r in results) > 0  # forged messages refused
    assert max(r.round_max for r in results) > 0


def test_a_seed_replays_exactly() -> None:
    first, again = (Simulation(SimConfig(11)).run() for _ in range(2))
    assert first == again
    assert Simulation(SimConfig(12)).run().digest != first.digest


def test_a_weakened_quorum_is_caught_as_an_agreement_violation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ValidatorSet, "is_quorum", lambda self, p: 3 * p > self.total_power)
    failures = []
    for seed in range(1, 31):
        try:
            Simulation(SimConfig(seed)).run()
        except InvariantViolation as exc:
            failures.append(str(exc))
    assert any("agreement" in f for f in failures)
    assert all(f.startswith("seed ") for f in failures)


def test_a_lost_wal_is_caught_as_equivocation(monkeypatch: pytest.MonkeyPatch) -> None:
    restore = core_mod.Core.restore.__func__  # type: ignore[attr-defined]

    def forgetful(cls: type, config: core_mod.Config, height: int, records: object) -> object:
        return restore(cls, config, height, [])

    monkeypatch.setattr(core_mod.Core, "restore", classmethod(forgetful))
    with pytest.raises(InvariantViolation, match="equivocated"):
        for seed in range(1, 31):
            Simulation(SimConfig(seed)).run()


def test_cli_runs_a_batch_and_prints_the_replay_command_on_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--seeds", "1-2"]) == 0
    assert "2 seeds, 0 failed" in capsys.readouterr().out
    monkeypatch.setattr(ValidatorSet, "is_quorum", lambda self, p: 3 * p > self.total_power)
    assert main(["--seeds", "1-30"]) == 1
    err = capsys.readouterr().err
    assert "replay: python -m aggregator.consensus.sim --seeds" in err


def test_seed_lists() -> None:
    assert parse_seeds("7") == [7]
    assert parse_seeds("1-3,9,11-12") == [1, 2, 3, 9, 11, 12]
