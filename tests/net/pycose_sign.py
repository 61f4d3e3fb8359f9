"""Sign a batch with pycose (an independent COSE implementation), run by
.venv-pycose/bin/python: reads {"d", "x", "y", "kid", "payload", "kcwt"} (hex) as JSON on
stdin, prints the tagged COSE_Sign1 as hex.  The device certificate travels in the
unprotected header as kcwt (label 13, RFC 9528 §3.6)."""

import json
import sys

from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm
from pycose.keys import EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message

KCWT = 13


def main() -> None:
    request = json.loads(sys.stdin.read())
    message = Sign1Message(
        phdr={Algorithm: Es256, KID: bytes.fromhex(request["kid"])},
        uhdr={KCWT: bytes.fromhex(request["kcwt"])},
        payload=bytes.fromhex(request["payload"]),
    )
    message.key = EC2Key(
        crv=P256,
        d=bytes.fromhex(request["d"]),
        x=bytes.fromhex(request["x"]),
        y=bytes.fromhex(request["y"]),
    )
    sys.stdout.write(message.encode(tag=True).hex())


if __name__ == "__main__":
    main()
