"""`gridledger certs ...`: the registrar's commands."""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from aggregator import tx as tx_mod
from certs.registrar import (
    ISSUE_MANY_MAX,
    Registrar,
    RegistrarError,
    registrar_public_key,
    revoked_devices,
    write_bundle,
)
from edge import crypto
from edge.portable import cwt
from edge.portable.errors import CertificateError
from gridledger.output import SubParsers, command_group, describe_validity, iso_utc, key_value_lines

NODE_TIMEOUT_S = 10


def register(sub: SubParsers, name: str, help_text: str) -> None:
    commands = command_group(sub, name, help_text)
    _add_init(commands)
    _add_issue(commands)
    _add_show(commands)
    _add_enroll(commands)
    _add_revoke(commands)


def _add_init(commands: SubParsers) -> None:
    p = commands.add_parser(
        "init",
        help="create a registrar key pair",
        description="Create a registrar directory: a P-256 key pair (private key PEM PKCS#8, "
        "mode 0600) whose public key goes into every genesis file.",
    )
    p.add_argument("--dir", required=True, type=Path, help="registrar directory to create")
    p.add_argument("--name", default="registrar", help="issuer name written into certificates")
    p.set_defaults(func=cmd_init)


def _add_issue(commands: SubParsers) -> None:
    p = commands.add_parser(
        "issue",
        help="certify a device key",
        description="Issue a device certificate (a CWT signed by the registrar). Without "
        "--public-key a new device key is generated and written to --key-out; with it, "
        "only that public key is certified (a secure element keeps its private key).",
        epilog="examples: gridledger certs issue --dir ca --device-id gw-0001 "
        "--meter SDM630-17 --out gw-0001.cwt --key-out gw-0001.key;  "
        "gridledger certs issue --dir ca --count 100000 --prefix gw- --out fleet.jsonl",
    )
    p.add_argument("--dir", required=True, type=Path, help="registrar directory")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--device-id", help="device id: 1..64 of [A-Za-z0-9._:-]")
    who.add_argument("--count", type=int, metavar="N",
                     help="issue N devices PREFIX000001.. in one operation into one identity "
                     "bundle --out (JSON Lines with private keys, 0600)")
    p.add_argument("--prefix", default="gw-", help="device id prefix with --count (default gw-)")
    p.add_argument("--meters-per-device", type=int, default=1, metavar="M",
                   help="with --count: meters DEVICE.m1..mM in each certificate (default 1)")
    p.add_argument("--public-key", type=Path, help="PEM public key to certify (secure element)")
    p.add_argument("--meter", action="append", default=[], metavar="SERIAL",
                   help="a meter serial the device may report for (repeatable)")
    p.add_argument("--days", type=int, default=730, help="validity in days (default 730)")
    p.add_argument("--out", required=True, type=Path, help="certificate file to write")
    p.add_argument("--key-out", type=Path, help="where to write a generated device key (0600)")
    p.set_defaults(func=cmd_issue)


def _add_show(commands: SubParsers) -> None:
    p = commands.add_parser(
        "show",
        help="print a certificate's claims and validity",
        description="Print a device certificate in human-readable form. With --ca-dir the "
        "registrar signature and revocation are checked too, and the exit status says "
        "whether the certificate is valid now.",
    )
    p.add_argument("cert", type=Path, help="certificate file")
    p.add_argument("--ca-dir", type=Path, help="registrar directory to check the chain against")
    p.set_defaults(func=cmd_show)


def _add_revoke(commands: SubParsers) -> None:
    p = commands.add_parser(
        "revoke",
        help="revoke a device",
        description="Record the revocation of a device in the registrar directory; the "
        "aggregator puts it on chain so every node refuses the device from then on.",
    )
    p.add_argument("--dir", required=True, type=Path, help="registrar directory")
    p.add_argument("--device-id", required=True)
    p.add_argument("--reason", default="", help="free text kept with the revocation")
    p.add_argument("--node", metavar="URL",
                   help="also submit the signed revocation to this node, e.g. "
                   "http://127.0.0.1:8080, so it goes on chain")
    p.set_defaults(func=cmd_revoke)


def _add_enroll(commands: SubParsers) -> None:
    p = commands.add_parser(
        "enroll",
        help="put a device certificate on chain, with its meters' profiles",
        description="Sign an enrollment (the device certificate and, per meter, the profile "
        "whose plausibility limits the ledger applies) with the registrar key and submit it "
        "to a node. A device can also enroll itself by presenting its certificate in its "
        "first batch, but then its values are not checked against a profile.",
        epilog="example: gridledger certs enroll --dir ca --cert gw-0001.cwt "
        "--profile SDM630-17=sdm630 --node http://127.0.0.1:8080",
    )
    p.add_argument("--dir", required=True, type=Path, help="registrar directory")
    p.add_argument("--cert", required=True, type=Path, help="device certificate")
    p.add_argument("--profile", action="append", default=[], metavar="METER=PROFILE",
                   help="meter serial and its profile name (repeatable)")
    p.add_argument("--node", required=True, metavar="URL", help="node HTTP address")
    p.set_defaults(func=cmd_enroll)


def cmd_init(args: argparse.Namespace) -> int:
    registrar = Registrar.init(args.dir, args.name)
    print(f"registrar {registrar.name!r} created in {args.dir}")
    print(f"  private key  {args.dir / 'registrar.key'} (0600, keep it offline)")
    print(f"  public key   {args.dir / 'registrar.pub'}")
    print(f"  key id       {registrar.key_id.hex()}")
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    registrar = Registrar.open(args.dir)
    if args.count is not None:
        return _issue_bundle(registrar, args)
    public_key = None
    if args.public_key is not None:
        public_key = crypto.public_key_from_pem(args.public_key.read_bytes(), str(args.public_key))
    elif args.key_out is None:
        print("error [certs.usage]: give --key-out for the generated device key, or "
              "--public-key to certify an existing one", file=sys.stderr)
        return 2
    issued = registrar.issue(args.device_id, int(time.time()), public_key,
                             tuple(args.meter), args.days)
    args.out.write_bytes(issued.certificate)
    if issued.device_key is not None:
        crypto.write_private_key(args.key_out, issued.device_key)
    print(f"certificate for {args.device_id} written to {args.out} "
          f"(valid until {iso_utc(issued.claims.expires_at)})")
    if issued.device_key is not None:
        print(f"device private key written to {args.key_out} (0600)")
    return 0


def _issue_bundle(registrar: Registrar, args: argparse.Namespace) -> int:
    if args.public_key is not None or args.meter:
        print("error [certs.usage]: --count generates keys and names meters itself; "
              "drop --public-key and --meter", file=sys.stderr)
        return 2
    started = time.perf_counter()
    device_ids = bundle_device_ids(args.prefix, args.count)
    meters = args.meters_per_device
    issued = registrar.issue_many(device_ids, int(time.time()),
                                  lambda d: bundle_meter_ids(d, meters), args.days)
    write_bundle(args.out, registrar, issued)
    elapsed_s = time.perf_counter() - started
    print(f"{len(issued)} certificates {device_ids[0]}..{device_ids[-1]} with {meters} "
          f"meter(s) each written to {args.out} (0600, holds private keys) in {elapsed_s:.1f} s")
    return 0


def bundle_device_ids(prefix: str, count: int) -> list[str]:
    """PREFIX000001..: zero-padded to at least 6 digits so ids sort as they were issued."""
    if not 0 < count <= ISSUE_MANY_MAX:
        raise RegistrarError(f"--count must be 1..{ISSUE_MANY_MAX}")
    width = max(6, len(str(count)))
    return [f"{prefix}{n:0{width}d}" for n in range(1, count + 1)]


def bundle_meter_ids(device_id: str, meters: int) -> tuple[str, ...]:
    if not 0 < meters <= cwt.MAX_METERS:
        raise RegistrarError(f"--meters-per-device must be 1..{cwt.MAX_METERS}")
    return tuple(f"{device_id}.m{j}" for j in range(1, meters + 1))


def cmd_show(args: argparse.Namespace) -> int:
    data = args.cert.read_bytes()
    message, cert = cwt.parse(data)
    now_s = int(time.time())
    rows = [
        ("certificate", f"{args.cert} ({len(data)} bytes, sha256 "
                        f"{hashlib.sha256(data).hexdigest()[:16]})"),
        ("issuer", cert.issuer),
        ("device", cert.device_id),
        ("public key", f"{cert.public_key.hex()[:32]}... (P-256)"),
        ("meters", ", ".join(cert.meters) or "(any)"),
        ("issued", iso_utc(cert.issued_at)),
        ("expires", iso_utc(cert.expires_at)),
        ("validity", describe_validity(cert.issued_at, cert.expires_at, now_s)),
        ("signed by", f"registrar key {message.kid.hex()}"),
    ]
    status = 0
    if args.ca_dir is None:
        rows.append(("chain", "not checked (give --ca-dir)"))
    else:
        try:
            cwt.verify(data, registrar_public_key(args.ca_dir), now_s, crypto.verify,
                       revoked_devices(args.ca_dir))
            rows.append(("chain", f"verified against the registrar in {args.ca_dir}"))
        except CertificateError as exc:
            rows.append(("chain", f"FAILED [{exc.code}] {exc}"))
            status = 1
    print(key_value_lines(rows))
    return status


def cmd_revoke(args: argparse.Namespace) -> int:
    registrar = Registrar.open(args.dir)
    now_s = int(time.time())
    if registrar.revoke(args.device_id, now_s, args.reason):
        print(f"device {args.device_id} revoked")
    else:
        print(f"device {args.device_id} was already revoked")
    if args.node is None:
        return 0
    statement = tx_mod.make_revocation(args.device_id, now_s, args.reason,
                                       registrar.public_key, registrar.key.sign)
    return submit_registry(args.node, statement, f"revocation of {args.device_id}")


def cmd_enroll(args: argparse.Namespace) -> int:
    registrar = Registrar.open(args.dir)
    certificate = args.cert.read_bytes()
    _, claims = cwt.parse(certificate)
    profiles: dict[str, str] = {}
    for item in args.profile:
        meter, sep, profile = item.partition("=")
        if not sep or not meter or not profile:
            raise RegistrarError(f"--profile {item!r}: use METER=PROFILE")
        profiles[meter] = profile
    statement = tx_mod.make_enrollment(certificate, profiles, int(time.time()),
                                       registrar.public_key, registrar.key.sign)
    return submit_registry(args.node, statement, f"enrollment of {claims.device_id}")


def submit_registry(node_url: str, statement: bytes, what: str) -> int:
    """POST a registrar-signed registry transaction to a node's /v1/registry."""
    url = node_url.rstrip("/") + "/v1/registry"
    request = urllib.request.Request(url, data=statement, method="POST",
                                     headers={"Content-Type": "application/cbor"})
    try:
        with urllib.request.urlopen(request, timeout=NODE_TIMEOUT_S) as answer:
            print(f"{what} accepted by {node_url} ({answer.status}); it goes on chain "
                  "with the next block")
            return 0
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        print(f"error [certs.node]: {what} refused by {node_url}: {exc.code} {detail}",
              file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        raise RegistrarError(f"cannot reach {url}: {exc}", "certs.node") from None
