"""Shared vectors and builders for the portable-core tests."""

from __future__ import annotations

from edge.portable import batch, p256
from edge.portable.batch import Batch, MeterGroup, Record

# RFC 6979 Appendix A.2.5: ECDSA, 256 bits (prime field), SHA-256 rows.  The private key
# is a published test vector, not a secret.
RFC6979_TEST_VECTOR_KEY = bytes.fromhex(
    "C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721"
)
RFC6979_PUBLIC = bytes.fromhex(
    "04"
    "60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6"
    "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299"
)
RFC6979_SIGNATURES = {
    b"sample": bytes.fromhex(
        "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
        "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8"
    ),
    b"test": bytes.fromhex(
        "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367"
        "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083"
    ),
}

DEVICE_SECRET = bytes(range(1, 33))
REGISTRAR_SECRET = bytes(range(33, 65))
NOW_S = 1_763_700_000


def typical_batch(device_id: str = "gw-0001", seq: int = 42) -> Batch:
    """Two meters x seven quantities, integer registers and exact floats."""
    groups = []
    for index, meter_id in enumerate(("ISK5-0001", "ISK5-0002")):
        records = [
            Record("1-0:1.8.0", 123_456_789_000 + index, "J"),
            Record("1-0:2.8.0", 9_876_543_000 + index, "J"),
            Record("1-0:1.7.0", 1530.25, "W"),
            Record("1-0:32.7.0", 230.5, "V"),
            Record("1-0:31.7.0", 6.625, "A"),
            Record("1-0:14.7.0", 50.0, "Hz"),
            Record("1-0:13.7.0", 0.96875, "/"),
        ]
        groups.append(MeterGroup(meter_id, NOW_S - 5 + index, records))
    return Batch(device_id, seq, NOW_S, True, groups)


def signed_typical_batch() -> bytes:
    key = p256.SigningKey.from_bytes(DEVICE_SECRET)
    return batch.sign(typical_batch(), key.sign)
