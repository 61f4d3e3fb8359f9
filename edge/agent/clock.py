"""Clock status for the batch (field 4): is the kernel clock synchronised?

`adjtimex(2)` with modes = 0 only reads the kernel's time state; it returns TIME_ERROR
(5) while the clock is unsynchronised, whichever daemon disciplines it (systemd-timesyncd,
chrony, ntpd).  Where the call is unavailable the status is "unsynced": a batch never
claims a quality of time it cannot show.
"""

from __future__ import annotations

import ctypes
import ctypes.util

TIME_ERROR = 5
TIMEX_BYTES = 512  # struct timex is 208 bytes on 64-bit Linux; room to spare


def kernel_synced() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        buffer = ctypes.create_string_buffer(TIMEX_BYTES)  # modes (first field) = 0
        state = int(libc.adjtimex(buffer))
    except (OSError, AttributeError):
        return False
    return 0 <= state < TIME_ERROR


def synced(mode: str) -> bool:
    """The clock status for a config mode: auto, synced or unsynced."""
    if mode == "auto":
        return kernel_synced()
    return mode == "synced"
