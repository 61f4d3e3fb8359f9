"""Decoders of peer bytes: every input parses or raises the documented error."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.consensus.certificate import CertificateError, decode_certificate
from aggregator.consensus.core import Record, decode_record, encode_record
from aggregator.consensus.messages import (
    PREVOTE,
    ConsensusMessageError,
    decode_message,
    encode_message,
)
from tests.consensus.helpers import proposal, vote

SAMPLES = [encode_message(proposal(2, 1, b"ok-value", 0)),
           encode_message(vote(PREVOTE, 2, 1, None, "node-2"))]


def _mutate(data: bytes, position: int, byte: int) -> bytes:
    position %= len(data)
    return data[:position] + bytes([byte]) + data[position + 1:]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_are_refused_with_a_code(data: bytes) -> None:
    for decode, error in ((decode_message, ConsensusMessageError),
                          (decode_certificate, CertificateError),
                          (decode_record, ConsensusMessageError)):
        try:
            decode(data)
        except error as exc:
            assert exc.code.startswith("consensus.")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.integers(min_value=0), st.integers(0, 255),
       st.integers(0, 4))
def test_mutated_messages_parse_or_raise_the_documented_error(
    raw: bytes, position: int, byte: int, cut: int,
) -> None:
    data = _mutate(raw, position, byte)[: len(raw) - cut]
    try:
        message = decode_message(data)
    except ConsensusMessageError:
        return
    assert encode_message(message) == data  # what parses is canonical


def test_records_round_trip() -> None:
    v = vote(PREVOTE, 2, 1, None, "node-2")
    record = Record(v, b"value", (vote(PREVOTE, 2, 1, None, "node-3"),))
    assert decode_record(encode_record(record)) == record
