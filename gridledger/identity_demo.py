"""`gridledger demo --identity-only`: one reading through identity and the wire format.

A registrar is created, a gateway certified for its meters, simulated meters read, the
batch signed, verified against the registrar alone, printed decoded, and a tampered
copy is shown caught.  The exit status is 0 only when the genuine batch verifies and
the tampered one is rejected.  Nothing listens on the network.
"""

from __future__ import annotations

import time
from pathlib import Path

from certs.registrar import Registrar, revoked_devices
from edge import crypto
from edge.portable import batch as batch_mod
from edge.portable import cbor, verify
from edge.portable.errors import RemoteProtocolError
from edge.readings import group_from_values
from edge.signing_cli import describe_batch
from hardware import profiles
from simulator.model import Fleet

DEVICE_ID = "gw-demo-0001"
DEMO_PROFILES = ("sdm630", "sdm120")


def step(text: str) -> None:
    print(f"\n== {text}")


def simulated_groups(seed: int, now_s: float) -> list[batch_mod.MeterGroup]:
    groups = []
    for index, name in enumerate(DEMO_PROFILES):
        profile = profiles.load(name)
        meter = Fleet(profile, [1], seed + index, now_s - 900.0).meter(1)
        values = meter.values(now_s)
        readings = {q.obis: (values[q.obis], q.unit) for q in profile.quantities}
        groups.append(group_from_values(f"{name.upper()}-{seed:04d}", now_s, readings))
    return groups


def run(directory: Path, seed: int) -> int:
    now_s = int(time.time())
    step("registrar: the utility's registration centre")
    ca_dir = directory / "ca"
    registrar = Registrar.open(ca_dir) if (ca_dir / "registrar.key").exists() \
        else Registrar.init(ca_dir, "demo-utility")
    print(f"key id {registrar.key_id.hex()} in {ca_dir}")

    step("reading simulated meters")
    groups = simulated_groups(seed, now_s)
    meters = tuple(g.meter_id for g in groups)
    for group in groups:
        print(f"{group.meter_id}: {len(group.records)} quantities")

    step(f"certifying gateway {DEVICE_ID} for {', '.join(meters)}")
    issued = registrar.issue(DEVICE_ID, now_s, meters=meters, days=30)
    assert issued.device_key is not None
    print(f"certificate {len(issued.certificate)} bytes (CWT signed by the registrar)")

    step("signing batch seq 1 (COSE_Sign1, ES256, deterministic)")
    batch = batch_mod.Batch(DEVICE_ID, 1, now_s, True, groups)
    message = batch_mod.sign(batch, issued.device_key.sign, issued.certificate)
    (directory / "batch-1.cose").write_bytes(message)
    print(f"{len(message)} bytes -> {directory / 'batch-1.cose'}")

    step("verifying with nothing but the registrar's public key")
    genuine_ok = _verify(message, registrar, ca_dir, now_s)
    if genuine_ok:
        print(describe_batch(batch))

    step("tampering: one byte of a reading changed")
    tampered = _tamper(message, batch)
    caught = not _verify(tampered, registrar, ca_dir, now_s)

    step("result")
    print(f"genuine batch verified: {'yes' if genuine_ok else 'NO'}")
    print(f"tampered batch caught:  {'yes' if caught else 'NO'}")
    return 0 if genuine_ok and caught else 1


def _verify(message: bytes, registrar: Registrar, ca_dir: Path, now_s: int) -> bool:
    try:
        verify.verify_message(message, registrar.public_key, now_s, crypto.verify,
                              revoked=revoked_devices(ca_dir))
    except RemoteProtocolError as exc:
        print(f"REJECTED [{exc.code}] {exc}")
        return False
    print("signature, certificate and registrar chain: VERIFIED")
    return True


def _tamper(message: bytes, batch: batch_mod.Batch) -> bytes:
    """Change the last reading's value by one unit in its last place: the CBOR stays
    well-formed, so only the signature can tell."""
    last = batch.meters[-1].records[-1]
    encoded = cbor.encode(last.value)
    position = message.rindex(encoded) + len(encoded) - 1
    flipped = bytearray(message)
    flipped[position] ^= 0x01
    forged = cbor.decode(bytes(flipped[position + 1 - len(encoded) : position + 1]))
    print(f"{last.name} of {batch.meters[-1].meter_id}: {last.value} -> {forged} {last.unit}")
    return bytes(flipped)
