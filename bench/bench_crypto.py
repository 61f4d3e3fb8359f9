"""ES256 signs/s and verifies/s for every backend GridLedger could use, in one run.

Rows: the pure-Python signer of edge/portable/p256.py on CPython and on MicroPython (the
unix port, timed inside the interpreter with time.ticks_us), `cryptography` (OpenSSL,
deterministic RFC 6979 signing, as edge/crypto.py uses it) and pycryptodome
(DSS 'deterministic-rfc6979').  The last row is the aggregator's case: `cryptography`
verifying on every core at once, one process a core (ProcessPoolExecutor), started
together and counted over the same window.

Every backend signs the same message (the Sig_structure of a typical 2-meter batch) with
the same key, and the run first checks that all of them give the same signature bytes.
Each figure is operations done in `--seconds` of wall time on one core (default 3 s, so
the whole run takes about 30 s).  The load average printed with the machine says whether
something else was running: the figures are only as quiet as the machine.

    python bench/bench_crypto.py [--seconds 3] [--processes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cryptography
from Crypto import __version__ as pycryptodome_version
from Crypto.Hash import SHA256
from Crypto.PublicKey import ECC
from Crypto.Signature import DSS
from cryptography.hazmat.backends.openssl import backend as openssl_backend

from edge import crypto
from edge.portable import cose, p256
from edge.portable.batch import Batch, MeterGroup, Record
from gridledger.machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.portable.helpers import RFC6979_TEST_VECTOR_KEY  # noqa: E402  (one copy of it)

START_DELAY_S = 1.0  # lets every worker process start before the shared window opens

Op = Callable[[], object]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    load_before = os.getloadavg()[0]
    message = _typical_message()
    signature = p256.SigningKey.from_bytes(RFC6979_TEST_VECTOR_KEY).sign(message)
    _check_backends_agree(message, signature)
    rows: list[tuple[str, str, float | None, float | None]] = []
    for name, interpreter, sign, verify in _in_process_backends(message, signature):
        rows.append((name, interpreter, _rate(sign, args.seconds), _rate(verify, args.seconds)))
        print(f"measured {name} on {interpreter}", file=sys.stderr, flush=True)
    mpy_sign, mpy_verify, mpy_version = _micropython_rates(message, signature, args.seconds)
    rows.insert(1, ("pure Python (p256.py)", mpy_version, mpy_sign, mpy_verify))
    pooled = _pooled_verify_rate(message, signature, args.seconds, args.processes)
    label = f"cryptography, {args.processes} processes"
    rows.append((label, "CPython, batch verification", None, pooled))
    print(_machine(len(message), args.seconds, load_before))
    print()
    print(_table(rows))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="wall time per figure")
    parser.add_argument("--processes", type=int, default=2, help="for the batch-verify row")
    return parser


def _typical_message() -> bytes:
    """The bytes a gateway signs for a batch of 2 meters x 7 quantities."""
    groups = []
    for index in range(2):
        records = [
            Record("1-0:1.8.0", 123_456_789_000 + index, "J"),
            Record("1-0:2.8.0", 9_876_543_000, "J"),
            Record("1-0:1.7.0", 1530.25, "W"),
            Record("1-0:32.7.0", 230.5, "V"),
            Record("1-0:31.7.0", 6.625, "A"),
            Record("1-0:14.7.0", 50.0, "Hz"),
            Record("1-0:13.7.0", 0.96875, "/"),
        ]
        groups.append(MeterGroup(f"meter-{index}", 1_763_700_000, records))
    payload = Batch("gw-0001", 42, 1_763_700_005, True, groups).encode()
    return cose.sig_structure(cose.protected_header(b"gw-0001"), payload)


def _pycryptodome_key() -> ECC.EccKey:
    return ECC.construct(curve="P-256", d=int.from_bytes(RFC6979_TEST_VECTOR_KEY, "big"))


def _check_backends_agree(message: bytes, signature: bytes) -> None:
    native = crypto.SigningKey.from_bytes(RFC6979_TEST_VECTOR_KEY).sign(message)
    dome = DSS.new(_pycryptodome_key(), "deterministic-rfc6979").sign(SHA256.new(message))
    if not native == dome == signature:
        raise SystemExit("backends disagree on the RFC 6979 signature: refusing to compare")


def _in_process_backends(
    message: bytes, signature: bytes
) -> list[tuple[str, str, Op, Op]]:
    cpython = f"CPython {platform.python_version()}"
    pure = p256.SigningKey.from_bytes(RFC6979_TEST_VECTOR_KEY)
    public = pure.public_key()
    native = crypto.SigningKey.from_bytes(RFC6979_TEST_VECTOR_KEY)
    dome_key = _pycryptodome_key()
    dome_signer = DSS.new(dome_key, "deterministic-rfc6979")
    dome_verifier = DSS.new(dome_key.public_key(), "fips-186-3")

    def dome_verify() -> None:
        dome_verifier.verify(SHA256.new(message), signature)  # raises ValueError if bad

    return [
        (
            "pure Python (p256.py)",
            cpython,
            lambda: pure.sign(message),
            lambda: p256.verify(public, message, signature),
        ),
        (
            f"cryptography {cryptography.__version__}",
            cpython,
            lambda: native.sign(message),
            lambda: crypto.verify(public, message, signature),
        ),
        (
            f"pycryptodome {pycryptodome_version}",
            cpython,
            lambda: dome_signer.sign(SHA256.new(message)),
            dome_verify,
        ),
    ]


def _rate(op: Op, seconds: float) -> float:
    """Operations a second: call `op` until `seconds` of wall time have passed."""
    op()  # warm up: tables, caches, first-call costs
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        op()
        count += 1
        now = time.perf_counter()
    return count / (now - start)


# -- MicroPython ----------------------------------------------------------------------

_MPY_SCRIPT = """
import sys, time, binascii
from portable import p256
secret = binascii.unhexlify("{secret}")
message = binascii.unhexlify("{message}")
signature = binascii.unhexlify("{signature}")
budget_us = {budget_us}
key = p256.SigningKey.from_bytes(secret)
public = key.public_key()
assert key.sign(message) == signature
assert p256.verify(public, message, signature)

def rate(op):
    count = 0
    start = time.ticks_us()
    elapsed = 0
    while elapsed < budget_us:
        op()
        count += 1
        elapsed = time.ticks_diff(time.ticks_us(), start)
    return count * 1000000 / elapsed

sign = rate(lambda: key.sign(message))
verify = rate(lambda: p256.verify(public, message, signature))
version = ".".join(str(part) for part in sys.implementation.version[:3])
print('{{"sign": %f, "verify": %f, "version": "%s"}}' % (sign, verify, version))
"""


def _micropython_binary() -> str | None:
    here = Path(sys.executable).parent / "micropython"
    return str(here) if here.exists() else shutil.which("micropython")


def _micropython_rates(
    message: bytes, signature: bytes, seconds: float
) -> tuple[float | None, float | None, str]:
    binary = _micropython_binary()
    if binary is None:
        return None, None, "MicroPython (not installed: run ./dev)"
    script = _MPY_SCRIPT.format(
        secret=RFC6979_TEST_VECTOR_KEY.hex(),
        message=message.hex(),
        signature=signature.hex(),
        budget_us=int(seconds * 1_000_000),
    )
    env = dict(os.environ, MICROPYPATH=f"{ROOT / 'edge'}:.frozen")
    proc = subprocess.run(
        [binary, "-X", "heapsize=4m", "-c", script],
        capture_output=True,
        timeout=60 + 4 * seconds,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"micropython failed:\n{proc.stderr.decode()}{proc.stdout.decode()}")
    result = json.loads(proc.stdout)
    print("measured pure Python on MicroPython", file=sys.stderr, flush=True)
    return float(result["sign"]), float(result["verify"]), f"MicroPython {result['version']}"


# -- verification on every core -----------------------------------------------------------


def _verify_in_window(
    public: bytes, message: bytes, signature: bytes, start_at: float, seconds: float
) -> int:
    """Verifications done between `start_at` and `start_at + seconds` (time.time clock)."""
    crypto.verify(public, message, signature)  # warm up before the window opens
    time.sleep(max(0.0, start_at - time.time()))
    count = 0
    end_at = start_at + seconds
    while time.time() < end_at:
        if not crypto.verify(public, message, signature):
            raise AssertionError("signature did not verify")
        count += 1
    return count


def _pooled_verify_rate(message: bytes, signature: bytes, seconds: float, workers: int) -> float:
    public = p256.SigningKey.from_bytes(RFC6979_TEST_VECTOR_KEY).public_key()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        start_at = time.time() + START_DELAY_S
        futures = [
            pool.submit(_verify_in_window, public, message, signature, start_at, seconds)
            for _ in range(workers)
        ]
        counts = [future.result() for future in futures]
    print(f"measured cryptography verify in {workers} processes", file=sys.stderr, flush=True)
    return sum(counts) / seconds


# -- report -------------------------------------------------------------------------------


def _machine(message_bytes: int, seconds: float, load_before: float) -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return "\n".join(
        [
            f"- CPU: {cpu_model()}, {os.cpu_count()} cores ({usable} usable)",
            f"- Python {platform.python_version()} ({platform.python_implementation()}),"
            f" {openssl_backend.openssl_version_text()}",
            f"- message: {message_bytes}-byte Sig_structure of a 2 x 7 batch;"
            f" {seconds:g} s a figure; 1-minute load average {load_before:.2f} before,"
            f" {os.getloadavg()[0]:.2f} after",
        ]
    )


def _fmt(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:,.0f}"


def _table(rows: list[tuple[str, str, float | None, float | None]]) -> str:
    lines = [
        "| backend | interpreter | ES256 sign/s | ES256 verify/s |",
        "|---|---|---:|---:|",
    ]
    for name, interpreter, sign, verify in rows:
        lines.append(f"| {name} | {interpreter} | {_fmt(sign)} | {_fmt(verify)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
