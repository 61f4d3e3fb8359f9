"""The ESP32 flash queue under the real MicroPython interpreter: reboots, torn writes,
segment turnover; the seq survives all of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import mpy

FIRMWARE = mpy.ROOT / "edge" / "firmware"

SCRIPT = """
import os
import fstore
fstore.SEGMENT_BYTES = 64  # a few records per segment, so turnover happens here
root = %r

def reopen():
    return fstore.FlashStore(root)

s = reopen()
for seq in range(1, 6):
    s.append(seq, b"batch-%%d" %% seq * 4, 0)
print("depth", s.depth(), "last", s.last_seq(), "segments", sorted(os.listdir(root + "/q")))
s.delete(1); s.delete(2); s.delete(2)
s = reopen()  # a reboot
print("after reboot", s.depth(), s.last_seq(), s.oldest(10, 0), s.get(3))
with open(root + "/q/" + str(s.segment - 1) + ".seg", "ab") as f:
    f.write(b"\\xa5\\x40\\x00\\x06\\x00")  # a record cut short by a reset
s = reopen()
print("torn", s.depth(), s.last_seq())
for seq in (3, 4, 5):
    s.delete(seq)
s.append(6, b"x" * 80, 0)  # fills the segment
s.delete(6)
s.append(7, b"y", 0)
s.delete(7)
s = reopen()
print("emptied", s.depth(), s.last_seq(), sorted(os.listdir(root + "/q")))
try:
    s.append(7, b"again", 0)
except Exception as exc:
    print("reuse refused", exc.code)
"""


@pytest.mark.micropython
def test_flash_queue_keeps_seq_through_reboots_and_torn_writes(tmp_path: Path) -> None:
    out = mpy.run(SCRIPT % str(tmp_path), extra_path=(FIRMWARE,)).splitlines()
    assert out[0].startswith("depth 5 last 5 segments ")
    assert out[1] == "after reboot 3 5 [3, 4, 5] b'batch-3batch-3batch-3batch-3'"
    assert out[2] == "torn 3 5"
    assert out[3].startswith("emptied 0 7 ")
    assert out[4] == "reuse refused local.misuse"
