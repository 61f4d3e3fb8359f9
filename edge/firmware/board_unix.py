"""The Unix stand-in for a board: a pseudo-terminal as the UART, sockets, files.

The UART is a serial device path (the simulator's pty); there is no RS-485 direction
pin, so write() only writes.  The clock is the host's, taken as synchronised.
"""

import os
import select
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ROOT = os.getenv("GL_FIRMWARE_ROOT") or "."


class PtyUart:
    def __init__(self, path: str) -> None:
        self.file = open(path, "r+b")  # noqa: SIM115  (open for the life of the board)
        self.poll = select.poll()
        self.poll.register(self.file, select.POLLIN)

    def write(self, data: bytes) -> None:
        self.file.write(data)  # unbuffered on the unix port; flush() is fsync, EINVAL on a tty

    def read(self) -> bytes:
        if not self.poll.poll(0):
            return b""
        data = self.file.read(1)  # one byte at a time: never blocks once readable
        return data or b""


class Board:
    root = ROOT

    def boot(self) -> None:
        pass

    def maintain(self) -> None:
        pass  # the host keeps its own network and clock

    def uart(self, settings: "dict[str, Any]") -> PtyUart:
        return PtyUart(settings["port"])

    def now_s(self) -> int:
        return int(time.time())

    def ticks_ms(self) -> "Any":  # an opaque ticks value; compare with ticks_diff
        return time.ticks_ms()

    def ticks_diff(self, a: "Any", b: "Any") -> int:
        return time.ticks_diff(a, b)

    def clock_synced(self) -> bool:
        return True

    def sleep_ms(self, ms: int) -> None:
        time.sleep_ms(ms)

    def reset(self) -> None:
        sys.exit(1)
