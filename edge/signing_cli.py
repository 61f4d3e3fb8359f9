"""`gridledger edge sign` and `gridledger edge inspect`: make and check one message."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from certs.registrar import registrar_public_key, revoked_devices
from edge import crypto
from edge.portable import batch as batch_mod
from edge.portable import cose, cwt, verify
from edge.portable.errors import GridLedgerError, RemoteProtocolError
from gridledger.output import SubParsers, iso_utc, key_value_lines

EXIT_NOT_VERIFIED = 1


def add_commands(commands: SubParsers) -> None:
    p = commands.add_parser(
        "sign",
        help="sign a SenML reading as a batch message",
        description="Sign READING.json, a SenML JSON pack (RFC 8428) with one group per meter "
        "(bn = \"<meter-id>/\", bt = read time; n = OBIS code, u = SI unit, s for energy in J, "
        "v otherwise), as a COSE_Sign1 batch message.",
        epilog="example: gridledger edge sign --key gw.key --device-id gw-0001 --seq 1 "
        "reading.json -o batch.cose",
    )
    p.add_argument("reading", type=Path, metavar="READING.json")
    p.add_argument("--key", required=True, type=Path, help="device private key (PEM)")
    p.add_argument("--device-id", required=True)
    p.add_argument("--seq", required=True, type=int, help="sequence number, never reused")
    p.add_argument("--sent-at", type=int, help="Unix seconds (default: now)")
    p.add_argument("--clock-unsynced", action="store_true",
                   help="mark the device clock as not synchronised (clock status 0)")
    p.add_argument("--cert", type=Path, help="carry this certificate in the message (kcwt)")
    p.add_argument("-o", "--out", required=True, type=Path, help="message file to write")
    p.set_defaults(func=cmd_sign)

    p = commands.add_parser(
        "inspect",
        help="decode and verify a batch message",
        description="Decode a batch message, print it, and verify the signature, the device "
        "certificate (from --cert or carried in the message) and its chain to the registrar "
        "of --ca-dir. Exit status 0 only when everything verifies.",
    )
    p.add_argument("message", type=Path, metavar="MSG")
    p.add_argument("--cert", type=Path, help="device certificate (default: the one in MSG)")
    p.add_argument("--ca-dir", type=Path, help="registrar directory (registrar.pub is enough)")
    p.add_argument("--json", action="store_true", help="print the decoded batch as JSON")
    p.set_defaults(func=cmd_inspect)


def cmd_sign(args: argparse.Namespace) -> int:
    try:
        pack = json.loads(args.reading.read_text())
    except json.JSONDecodeError as exc:
        raise GridLedgerError(f"{args.reading}: not JSON ({exc})", "input.json") from None
    groups = batch_mod.groups_from_senml_json(pack)
    sent_at = args.sent_at if args.sent_at is not None else int(time.time())
    batch = batch_mod.Batch(args.device_id, args.seq, sent_at, not args.clock_unsynced, groups)
    key = crypto.read_private_key(args.key)
    kcwt = args.cert.read_bytes() if args.cert else None
    message = batch_mod.sign(batch, key.sign, kcwt)
    args.out.write_bytes(message)
    print(f"signed batch {args.device_id}#{args.seq}: {len(groups)} meters, "
          f"{len(message)} bytes -> {args.out}")
    return 0


def batch_to_json(batch: batch_mod.Batch) -> dict[str, object]:
    return {
        "device_id": batch.device_id,
        "seq": batch.seq,
        "sent_at": batch.sent_at_s,
        "clock_synced": batch.clock_synced,
        "senml": batch_mod.groups_to_senml_json(batch.meters),
    }


def describe_batch(batch: batch_mod.Batch) -> str:
    head = key_value_lines([
        ("device", batch.device_id),
        ("seq", str(batch.seq)),
        ("sent at", f"{iso_utc(batch.sent_at_s)} "
                    f"(clock {'synced' if batch.clock_synced else 'UNSYNCED'})"),
        ("meters", str(len(batch.meters))),
    ])
    lines = [head]
    for group in batch.meters:
        lines.append(f"  meter {group.meter_id} read at {iso_utc(group.read_time_s)}")
        for record in group.records:
            unit = f" {record.unit}" if record.unit else ""
            lines.append(f"    {record.name:<12} {record.value}{unit}")
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    data = args.message.read_bytes()
    message, batch = batch_mod.open_message(data)
    if args.json:
        print(json.dumps(batch_to_json(batch), indent=2))
    else:
        print(describe_batch(batch))
        print(f"message      {len(data)} bytes, ES256, kid {message.kid.decode()!r}")
    cert_bytes = args.cert.read_bytes() if args.cert else message.kcwt
    return _report(_verify(data, message, cert_bytes, args.ca_dir), to_stderr=args.json)


def _verify(data: bytes, message: cose.Sign1, cert_bytes: bytes | None,
            ca_dir: Path | None) -> list[tuple[str, str, bool]]:
    """Verification steps as (step, outcome, ok)."""
    if cert_bytes is None:
        return [("certificate", "none given and none in the message (use --cert)", False)]
    if ca_dir is None:
        try:
            _, cert = cwt.parse(cert_bytes)
            cose.verify(message, cert.public_key, crypto.verify)
        except RemoteProtocolError as exc:
            return [("signature", f"FAILED [{exc.code}] {exc}", False)]
        return [("signature", "ok (certificate key)", True),
                ("chain", "not checked (give --ca-dir)", False)]
    registrar_key = registrar_public_key(ca_dir)
    try:
        verified = verify.verify_message(
            data, registrar_key, int(time.time()), crypto.verify, cert_bytes,
            revoked_devices(ca_dir))
    except RemoteProtocolError as exc:
        return [("verification", f"FAILED [{exc.code}] {exc}", False)]
    cert = verified.certificate
    return [("signature", "ok", True),
            ("certificate", f"ok: {cert.device_id}, issued by {cert.issuer}, valid until "
                            f"{iso_utc(cert.expires_at)}", True),
            ("chain", f"ok: registrar key {cwt.key_id(registrar_key).hex()}", True)]


def _report(steps: list[tuple[str, str, bool]], to_stderr: bool) -> int:
    stream = sys.stderr if to_stderr else sys.stdout
    print(key_value_lines([(step, outcome) for step, outcome, _ in steps]), file=stream)
    if all(ok for _, _, ok in steps):
        print("VERIFIED", file=stream)
        return 0
    print("NOT VERIFIED", file=stream)
    return EXIT_NOT_VERIFIED
