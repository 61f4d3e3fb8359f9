"""Quorums and proposer rotation by power; the message codec and its refusals."""

from __future__ import annotations

from collections import Counter

import pytest

from aggregator.consensus.messages import (
    PRECOMMIT,
    PREVOTE,
    ConsensusMessageError,
    MessageLimitError,
    decode_message,
    encode_message,
    value_id,
)
from aggregator.consensus.validators import ValidatorSet, ValidatorSetError
from edge.portable import cbor
from tests.consensus.helpers import KEYS, proposal, vote

KEY = KEYS["node-0"].public_key()


def powered(**powers: int) -> ValidatorSet:
    return ValidatorSet.of((n, KEY, p) for n, p in powers.items())


def test_quorums_are_strictly_more_than_two_thirds_and_one_third() -> None:
    four = powered(a=1, b=1, c=1, d=1)
    assert [four.is_quorum(p) for p in range(5)] == [False, False, False, True, True]
    assert [four.is_one_honest(p) for p in range(5)] == [False, False, True, True, True]
    three = powered(a=1, b=1, c=1)
    assert not three.is_quorum(2)  # exactly 2/3 is not enough


def test_proposer_rotation_follows_power() -> None:
    validators = powered(a=1, b=2, c=3, d=4)
    picks = [validators.proposer(1, r) for r in range(10)]
    assert Counter(picks) == {"a": 1, "b": 2, "c": 3, "d": 4}
    assert picks == [validators.proposer(1, r) for r in range(10, 20)]  # period = total power
    assert validators.proposer(5, 2) == validators.proposer(6, 1)  # step height + round


def test_proposer_rotation_is_smooth_and_breaks_ties_by_node_id() -> None:
    validators = powered(b=1, a=3)
    assert [validators.proposer(0, r) for r in range(4)] == ["a", "a", "b", "a"]
    equal = powered(c=1, a=1, b=1)
    assert [equal.proposer(0, r) for r in range(3)] == ["a", "b", "c"]


def test_validator_set_limits() -> None:
    with pytest.raises(ValidatorSetError):
        powered(a=0)
    with pytest.raises(ValidatorSetError):
        ValidatorSet({})


def test_messages_round_trip() -> None:
    for message in (proposal(3, 2, b"ok", 1), vote(PREVOTE, 3, 2, None, "node-2"),
                    vote(PRECOMMIT, 3, 2, value_id(b"ok"), "node-3")):
        assert decode_message(encode_message(message)) == message


@pytest.mark.parametrize("obj", [
    [], [9, 1, 0, None, "n", b"s" * 64], [True, 1, 0, None, "n", b"s" * 64],
    [1, 0, 0, None, "n", b"s" * 64], [1, 1, -1, None, "n", b"s" * 64],
    [1, 1, 0, b"short", "n", b"s" * 64], [1, 1, 0, None, "", b"s" * 64],
    [1, 1, 0, None, "n", b"s" * 63], [0, 1, 0, b"v", 0, "n", b"s" * 64],
    [0, 1, 1, "v", -1, "n", b"s" * 64], "vote",
])
def test_malformed_messages_raise_the_documented_error(obj: object) -> None:
    with pytest.raises(ConsensusMessageError):
        decode_message(cbor.encode(obj))


def test_garbage_and_oversized_votes_are_refused() -> None:
    with pytest.raises(ConsensusMessageError):
        decode_message(b"\xff\x00")
    big = cbor.encode([1, 1, 0, None, "n" * 600, b"s" * 64])
    with pytest.raises(MessageLimitError):
        decode_message(big)
