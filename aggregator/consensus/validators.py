"""The validator set: voting power, quorums and the proposer of each (height, round).

Quorums are by voting power (Buchman, Kwon, Milosevic 2018, §2: n > 3f counted in power):
"2f+1" is more than 2/3 of the total power, "f+1" more than 1/3.  With integer powers
these are `3 * p > 2 * total` and `3 * p > total`, exact without fractions.

Proposer rotation is CometBFT's proposer-priority algorithm (types/validator_set.go,
IncrementProposerPriority): every step each validator's priority grows by its power, the
highest priority proposes (ties to the smaller node id) and pays the total power back.
Starting from all-zero priorities the sums stay zero, so CometBFT's centring and
rescaling never act, and the sequence repeats every `total` steps with each validator
chosen exactly `power` times (it is the smooth weighted round-robin).  Here the proposer
of (height, round) is step `height + round` of that sequence: a pure function of the two
numbers, so a node rebuilt from its WAL agrees with the others without replaying the
rounds of earlier heights (CometBFT carries priorities across heights instead).

Limits: at most genesis.MAX_VALIDATORS (64) validators of power 1..1000, so the sequence
has at most 64 000 entries and is computed once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from edge.portable.errors import LocalProtocolError

__all__ = ["ValidatorSet", "ValidatorSetError"]

VALIDATORS_MAX = 64
POWER_MAX = 1000


class ValidatorSetError(LocalProtocolError):
    code = "consensus.validators"


@dataclass(frozen=True)
class ValidatorSet:
    """Node id -> (public key, power), as in the genesis file."""

    members: Mapping[str, tuple[bytes, int]]
    _sequence: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < len(self.members) <= VALIDATORS_MAX:
            raise ValidatorSetError(f"a validator set has 1..{VALIDATORS_MAX} members")
        for node_id, (_, power) in self.members.items():
            if not 0 < power <= POWER_MAX:
                raise ValidatorSetError(f"validator {node_id}: power must be 1..{POWER_MAX}")
        object.__setattr__(self, "_sequence", _proposer_sequence(self.powers()))

    @classmethod
    def of(cls, validators: Iterable[tuple[str, bytes, int]]) -> ValidatorSet:
        return cls({node_id: (key, power) for node_id, key, power in validators})

    def powers(self) -> dict[str, int]:
        return {node_id: power for node_id, (_, power) in self.members.items()}

    @property
    def total_power(self) -> int:
        return sum(power for _, power in self.members.values())

    def power(self, node_id: str) -> int:
        member = self.members.get(node_id)
        return 0 if member is None else member[1]

    def public_key(self, node_id: str) -> bytes | None:
        member = self.members.get(node_id)
        return None if member is None else member[0]

    def is_quorum(self, power: int) -> bool:
        """More than 2/3 of the power: the paper's 2f+1."""
        return 3 * power > 2 * self.total_power

    def is_one_honest(self, power: int) -> bool:
        """More than 1/3 of the power: the paper's f+1, at least one correct node."""
        return 3 * power > self.total_power

    def proposer(self, height: int, round_: int) -> str:
        return self._sequence[(height + round_) % len(self._sequence)]

    def proposed_by(self, node_id: str, height: int, rounds: int) -> bool:
        """Whether `node_id` proposes one of rounds 0..rounds-1 at `height`; at most one
        period of the sequence (total power, <= 64 000 entries) is looked at."""
        period = len(self._sequence)
        return any(self._sequence[(height + r) % period] == node_id
                   for r in range(min(rounds, period)))


def _proposer_sequence(powers: Mapping[str, int]) -> tuple[str, ...]:
    total = sum(powers.values())
    priority = dict.fromkeys(sorted(powers), 0)
    sequence = []
    for _ in range(total):
        for node_id in priority:
            priority[node_id] += powers[node_id]
        chosen = max(priority, key=priority.__getitem__)  # first maximum: smaller node id
        priority[chosen] -= total
        sequence.append(chosen)
    return tuple(sequence)

