"""Verify a signed batch end to end: message, certificate, signature, meters.

Theory of operation
-------------------
The checks run cheapest first, so garbage costs little:

1. `batch.open_message`: COSE structure, algorithm, batch fields, kid == device id;
2. the device certificate (the one given, else the kcwt in the unprotected header,
   RFC 9528 §3.6) chains to the registrar key, is valid at `now_s`, is not revoked
   (`cwt.verify`), and names the same device;
3. the batch signature verifies under the certificate's key;
4. every meter in the batch is one the certificate lists (when it lists any).

The result carries the batch and the certificate; the first failing step raises its
documented error.  Signature checks go through `verify_fn`, so CPython passes OpenSSL
and a MicroPython device the pure-Python verifier.

Portable: runs on MicroPython.
"""

from . import batch as batch_mod
from . import cose, cwt
from .errors import CertificateError, KidMismatchError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class UnauthorizedMeterError(CertificateError):
    code = "cert.meter"


class NoCertificateError(CertificateError):
    code = "cert.missing"


class Verified:
    """A batch whose signature and certificate have been checked."""

    def __init__(
        self, message: cose.Sign1, batch: batch_mod.Batch, certificate: cwt.DeviceCertificate
    ) -> None:
        self.message = message
        self.batch = batch
        self.certificate = certificate


def verify_message(
    data: bytes,
    registrar_public_key: bytes,
    now_s: int,
    verify_fn: "Callable[[bytes, bytes, bytes], bool]",
    certificate: bytes | None = None,
    revoked: "set[str] | None" = None,
) -> Verified:
    message, batch = batch_mod.open_message(data)
    cert_bytes = certificate if certificate is not None else message.kcwt
    if cert_bytes is None:
        raise NoCertificateError("no certificate given and none in the message (kcwt)")
    cert = cwt.verify(cert_bytes, registrar_public_key, now_s, verify_fn, revoked)
    if cert.device_id != batch.device_id:
        raise KidMismatchError(
            "certificate is for device " + cert.device_id + ", batch is from " + batch.device_id
        )
    cose.verify(message, cert.public_key, verify_fn)
    check_meters(batch, cert)
    return Verified(message, batch, cert)


def check_meters(batch: batch_mod.Batch, cert: cwt.DeviceCertificate) -> None:
    """Raise UnauthorizedMeterError for a meter the certificate does not list."""
    if not cert.meters:
        return
    for group in batch.meters:
        if group.meter_id not in cert.meters:
            raise UnauthorizedMeterError(
                "meter " + group.meter_id + " is not in the certificate of " + cert.device_id
            )
