"""pycose 1.1 as an independent COSE_Sign1 peer, run by .venv-pycose/bin/python.

Reads one JSON request on stdin and prints one JSON answer:
  {"op": "verify", "message": hex, "cose_key": hex}  -> {"ok": bool, "payload": hex}
  {"op": "sign", "d": hex, "x": hex, "y": hex, "kid": hex, "payload": hex}
                                                    -> {"message": hex}
"""

import json
import sys

from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm
from pycose.keys import CoseKey, EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message


def verify(request: dict) -> dict:
    message = Sign1Message.decode(bytes.fromhex(request["message"]))
    message.key = CoseKey.decode(bytes.fromhex(request["cose_key"]))
    try:
        ok = bool(message.verify_signature())
    except Exception as exc:  # pycose raises several types for a bad signature
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": ok, "payload": message.payload.hex(), "kid": message.phdr[KID].hex()}


def sign(request: dict) -> dict:
    key = EC2Key(
        crv=P256,
        d=bytes.fromhex(request["d"]),
        x=bytes.fromhex(request["x"]),
        y=bytes.fromhex(request["y"]),
    )
    message = Sign1Message(
        phdr={Algorithm: Es256, KID: bytes.fromhex(request["kid"])},
        payload=bytes.fromhex(request["payload"]),
    )
    message.key = key
    return {"message": message.encode(tag=True).hex()}


def main() -> None:
    request = json.loads(sys.stdin.read())
    answer = verify(request) if request["op"] == "verify" else sign(request)
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
