"""Commit certificates: more than 2/3 of the voting power precommitted one value.

A certificate is the deterministic CBOR array

    [height, round, value_id, [[node_id, signature], ...]]

with signatures sorted by node id, each an ES256 precommit signature (messages.sign_bytes
with type 2 and valid_round -1) by that validator's genesis key.  `verify_certificate`
needs only the chain id, the validator set and an ES256 verifier, so an offline verifier
holding the genesis file can check that a block was committed.

Errors
------
    RemoteProtocolError
    └── CertificateError            consensus.certificate   malformed certificate
        ├── CertificateSignatureError consensus.cert_signature  unknown, repeated or bad
        └── CertificatePowerError   consensus.cert_power    not more than 2/3 of the power
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge.portable import cbor
from edge.portable.errors import DecodeError, RemoteProtocolError

from .messages import PRECOMMIT, SIGNATURE_BYTES, VerifyFn, Vote, sign_bytes
from .validators import VALIDATORS_MAX, ValidatorSet

__all__ = [
    "CertificateError",
    "CertificatePowerError",
    "CertificateSignatureError",
    "CommitCertificate",
    "certificate_from_votes",
    "decode_certificate",
    "verify_certificate",
]

CERTIFICATE_BYTES_MAX = 128 + VALIDATORS_MAX * (SIGNATURE_BYTES + 80)


class CertificateError(RemoteProtocolError):
    code = "consensus.certificate"


class CertificateSignatureError(CertificateError):
    code = "consensus.cert_signature"


class CertificatePowerError(CertificateError):
    code = "consensus.cert_power"


@dataclass(frozen=True)
class CommitCertificate:
    height: int
    round: int
    value_id: bytes
    signatures: tuple[tuple[str, bytes], ...]

    def encode(self) -> bytes:
        sigs = [[node_id, sig] for node_id, sig in self.signatures]
        return cbor.encode([self.height, self.round, self.value_id, sigs])


def certificate_from_votes(
    height: int, round_: int, vid: bytes, votes: Iterable[Vote]
) -> CommitCertificate:
    signatures = sorted((v.node_id, v.signature) for v in votes
                        if v.type == PRECOMMIT and v.value_id == vid and v.round == round_)
    return CommitCertificate(height, round_, vid, tuple(signatures))


def verify_certificate(
    cert: CommitCertificate, chain_id: str, validators: ValidatorSet, verify: VerifyFn
) -> None:
    """Raise a CertificateError unless validators of more than 2/3 of the power signed."""
    message = sign_bytes(chain_id, cert.height, cert.round, PRECOMMIT, cert.value_id, -1)
    seen: set[str] = set()
    power = 0
    for node_id, signature in cert.signatures:
        public_key = validators.public_key(node_id)
        if node_id in seen or public_key is None:
            raise CertificateSignatureError(f"signature of {node_id!r}: unknown or repeated")
        if not verify(public_key, message, signature):
            raise CertificateSignatureError(f"signature of {node_id} does not verify")
        seen.add(node_id)
        power += validators.power(node_id)
    if not validators.is_quorum(power):
        raise CertificatePowerError(
            f"signed power {power} of {validators.total_power} is not more than 2/3"
        )


def decode_certificate(raw: bytes) -> CommitCertificate:
    try:
        obj = cbor.decode(raw, max_size_bytes=CERTIFICATE_BYTES_MAX)
    except DecodeError as exc:
        raise CertificateError(f"not CBOR: {exc}") from None
    if not isinstance(obj, list) or len(obj) != 4:
        raise CertificateError("a certificate is [height, round, value_id, signatures]")
    height, round_, vid, sigs = obj
    if not (_uint(height) and _uint(round_) and isinstance(vid, bytes) and len(vid) == 32):
        raise CertificateError("height, round or value id malformed")
    if not isinstance(sigs, list) or len(sigs) > VALIDATORS_MAX:
        raise CertificateError(f"signatures must be a list of at most {VALIDATORS_MAX}")
    assert isinstance(height, int) and isinstance(round_, int)
    return CommitCertificate(height, round_, vid, tuple(_signature(s) for s in sigs))


def _uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _signature(item: object) -> tuple[str, bytes]:
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
            and isinstance(item[1], bytes) and len(item[1]) == SIGNATURE_BYTES):
        raise CertificateError("a signature entry is [node_id, 64 bytes]")
    return item[0], item[1]
