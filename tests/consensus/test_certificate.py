"""Commit certificates: verifiable with the validator set alone; refusals by code."""

from __future__ import annotations

import pytest

from aggregator.consensus.certificate import (
    CertificateError,
    CertificatePowerError,
    CertificateSignatureError,
    CommitCertificate,
    certificate_from_votes,
    decode_certificate,
    verify_certificate,
)
from aggregator.consensus.messages import PRECOMMIT, PREVOTE, value_id
from edge.crypto import verify
from tests.consensus.helpers import CHAIN, IDS, VALIDATORS, vote

VID = value_id(b"ok-block")


def cert(signers: tuple[str, ...] = IDS[:3], round_: int = 0) -> CommitCertificate:
    votes = [vote(PRECOMMIT, 7, round_, VID, n) for n in signers]
    return certificate_from_votes(7, round_, VID, votes)


def test_quorum_of_precommits_verifies_and_survives_encoding() -> None:
    c = cert()
    verify_certificate(c, CHAIN, VALIDATORS, verify)
    assert decode_certificate(c.encode()) == c
    assert [n for n, _ in c.signatures] == sorted(IDS[:3])


def test_missing_signatures_are_refused() -> None:
    with pytest.raises(CertificatePowerError) as info:
        verify_certificate(cert(IDS[:2]), CHAIN, VALIDATORS, verify)
    assert info.value.code == "consensus.cert_power"


def test_duplicate_signatures_do_not_count_twice() -> None:
    c = cert(IDS[:2])
    doubled = CommitCertificate(7, 0, VID, (*c.signatures, c.signatures[0]))
    with pytest.raises(CertificateSignatureError):
        verify_certificate(doubled, CHAIN, VALIDATORS, verify)


def test_forged_unknown_and_misplaced_signatures_are_refused() -> None:
    c = cert()
    node, sig = c.signatures[0]
    flipped = CommitCertificate(7, 0, VID, ((node, bytes([sig[0] ^ 1]) + sig[1:]),
                                           *c.signatures[1:]))
    stranger = CommitCertificate(7, 0, VID, (("node-9", sig), *c.signatures[1:]))
    other_round = CommitCertificate(7, 1, VID, c.signatures)  # signed for round 0
    other_chain_ok = cert()
    for bad in (flipped, stranger, other_round):
        with pytest.raises(CertificateSignatureError):
            verify_certificate(bad, CHAIN, VALIDATORS, verify)
    with pytest.raises(CertificateSignatureError):
        verify_certificate(other_chain_ok, "gl-other", VALIDATORS, verify)


def test_prevotes_are_not_precommits() -> None:
    prevotes = [vote(PREVOTE, 7, 0, VID, n) for n in IDS]
    signatures = tuple(sorted((v.node_id, v.signature) for v in prevotes))
    with pytest.raises(CertificateSignatureError):
        verify_certificate(CommitCertificate(7, 0, VID, signatures), CHAIN, VALIDATORS, verify)
    assert certificate_from_votes(7, 0, VID, prevotes).signatures == ()


@pytest.mark.parametrize("raw", [b"", b"\x80", b"\x84\x07\x00\x41\x00\x80",
                                 b"\x84\x07\x00\x58\x20" + bytes(32) + b"\x81\x82\x61n\x41s"])
def test_malformed_certificates_raise_certificate_error(raw: bytes) -> None:
    with pytest.raises(CertificateError):
        decode_certificate(raw)
