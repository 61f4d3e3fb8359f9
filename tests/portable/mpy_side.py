"""Cases that run the same way under MicroPython and CPython, for byte comparisons.

Under MicroPython the core imports as `portable` (edge/ is on MICROPYPATH); under CPython
as `edge.portable`.  `handle(case)` turns one JSON case into one JSON-able answer, so both
interpreters run exactly this code.  Run as a script it reads a JSON list of cases on
stdin and prints one JSON line per case.  Written for MicroPython: no f-strings with "=",
no starred displays, no typing.
"""

import binascii
import json
import struct
import sys

try:
    from portable import batch, cbor, cose, cwt, p256
    from portable.errors import GridLedgerError
except ImportError:
    from edge.portable import batch, cbor, cose, cwt, p256
    from edge.portable.errors import GridLedgerError


def unhex(text):
    return binascii.unhexlify(text)


def tohex(data):
    return binascii.hexlify(data).decode()


def value_of(spec):
    if "i" in spec:
        return int(spec["i"])
    if "f" in spec:
        return struct.unpack(">d", unhex(spec["f"]))[0]
    return spec["s"]


def make_batch(case):
    groups = []
    for meter_id, read_time, records in case["groups"]:
        group = []
        for name, spec, unit in records:
            if name == batch.STATUS_NAME:
                group.append(batch.Record.status(value_of(spec)))
            else:
                group.append(batch.Record(name, value_of(spec), unit))
        groups.append(batch.MeterGroup(meter_id, int(read_time), group))
    return batch.Batch(
        case["device_id"], int(case["seq"]), int(case["sent_at"]), case["synced"], groups
    )


def make_cert(case):
    return cwt.DeviceCertificate(
        case["issuer"],
        case["device_id"],
        unhex(case["public_key"]),
        int(case["iat"]),
        int(case["exp"]),
        case["meters"],
    )


def summary(value):
    """A short, interpreter-independent description of a decoded value."""
    return tohex(cbor.encode(value))


def outcome(kind, data, case):
    if kind == "cbor":
        return summary(cbor.decode(data))
    if kind == "cose":
        message = cose.parse(data)
        return tohex(message.kid) + ":" + tohex(message.payload)
    if kind == "batch":
        message, opened = batch.open_message(data)
        return tohex(opened.encode())
    if kind == "signed-batch":
        message, opened = batch.open_message(data)
        cose.verify(message, unhex(case["public_key"]))
        return tohex(opened.encode())
    if kind == "cert":
        revoked = set(case.get("revoked", []))
        cert = cwt.verify(data, unhex(case["registrar"]), int(case["now"]), p256.verify, revoked)
        return cert.device_id + ":" + tohex(cert.public_key)
    raise ValueError("unknown kind " + kind)


def handle(case):
    op = case["op"]
    if op == "sign_batch":
        key = p256.SigningKey.from_bytes(unhex(case["secret"]))
        return tohex(batch.sign(make_batch(case), key.sign))
    if op == "ecdsa":
        key = p256.SigningKey.from_bytes(unhex(case["secret"]))
        message = unhex(case["message"])
        signature = key.sign(message)
        return [
            tohex(key.public_key()),
            tohex(signature),
            p256.verify(key.public_key(), message, signature),
        ]
    if op == "verify":
        return p256.verify(
            unhex(case["public_key"]), unhex(case["message"]), unhex(case["signature"])
        )
    if op == "cert_issue":
        key = p256.SigningKey.from_bytes(unhex(case["secret"]))
        return tohex(cwt.issue(make_cert(case), key.public_key(), key.sign))
    if op == "floats":
        out = []
        for spec in case["values"]:
            encoded = cbor.encode(value_of({"f": spec}))
            back = cbor.decode(encoded)
            out.append([tohex(encoded), tohex(struct.pack(">d", back))])
        return out
    if op == "outcome":
        try:
            return "ok:" + outcome(case["kind"], unhex(case["data"]), case)
        except GridLedgerError as exc:
            return "err:" + exc.code
        except Exception as exc:  # a crash is a bug; report it rather than stop the run
            return "crash:" + type(exc).__name__ + ":" + str(exc)
    raise ValueError("unknown op " + op)


def main():
    cases = json.loads(sys.stdin.read())
    for index, case in enumerate(cases):
        print(json.dumps({"index": index, "answer": handle(case)}))


if __name__ == "__main__":
    main()
