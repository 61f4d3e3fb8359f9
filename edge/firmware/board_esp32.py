"""ESP32: UARTs (RS-485 with a direction pin, P1 inverted), Wi-Fi station, SNTP, flash.

RS-485 is half duplex: the DE/RE pin goes high to drive the bus, the frame is written,
uart.flush() waits until the last stop bit has left the shift register, and the pin
goes low again before the meter starts answering (it waits 3.5 character times).
MicroPython's ESP32 port counts time from 2000-01-01; now_s() returns Unix seconds.
"""

import time

import config as config_mod
import machine
import network
import ntptime

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

EPOCH_OFFSET_S = 946684800 if time.gmtime(0)[0] == 2000 else 0
WIFI_TIMEOUT_MS = 15000
# The RTC drifts by seconds a day; an hourly SNTP sync keeps batch times honest.
RESYNC_EVERY_MS = 3600_000
# Joining blocks the loop for up to WIFI_TIMEOUT_MS; meters still need reading meanwhile.
REJOIN_EVERY_MS = 60_000


class Rs485Uart:
    def __init__(self, settings: "dict[str, Any]") -> None:
        # A P1 port has no TX and an inverted RX line (P1 Companion Standard §5.7).
        invert = machine.UART.INV_RX if settings.get("invert_rx") else 0
        self.uart = machine.UART(settings.get("uart_id", 2), baudrate=settings["baud"],
                                 bits=8, parity=settings.get("parity"),
                                 stop=settings.get("stop", 1), tx=settings.get("tx", -1),
                                 rx=settings["rx"], timeout=0, rxbuf=4096, invert=invert)
        de = settings.get("de")
        self.de = None if de is None else machine.Pin(de, machine.Pin.OUT, value=0)

    def write(self, data: bytes) -> None:
        if self.de is not None:
            self.de.value(1)
        self.uart.write(data)
        self.uart.flush()
        if self.de is not None:
            self.de.value(0)

    def read(self) -> bytes:
        return self.uart.read() or b""


class Board:
    root = "/"

    def __init__(self) -> None:
        self.synced = False
        self.synced_at = time.ticks_ms()
        self.joined_at = time.ticks_ms()
        self.wlan = network.WLAN(network.STA_IF)

    def boot(self) -> None:
        self.join()
        self.sync_clock()

    def join(self) -> None:
        cfg = config_mod.load(self.root)
        self.joined_at = time.ticks_ms()
        self.wlan.active(True)
        if self.wlan.isconnected():
            return
        self.wlan.connect(cfg["wifi_ssid"], cfg["wifi_password"])
        start = time.ticks_ms()
        while not self.wlan.isconnected() and time.ticks_diff(time.ticks_ms(),
                                                              start) < WIFI_TIMEOUT_MS:
            time.sleep_ms(100)

    def sync_clock(self) -> None:
        self.synced_at = time.ticks_ms()
        try:
            ntptime.settime()
            self.synced = True
        except OSError:
            pass  # batches say clock unsynced until a later try works

    def maintain(self) -> None:
        """Once a loop: rejoin Wi-Fi if it dropped (once a minute), re-sync the clock hourly."""
        if not self.wlan.isconnected() and time.ticks_diff(time.ticks_ms(),
                                                           self.joined_at) >= REJOIN_EVERY_MS:
            self.join()
        if time.ticks_diff(time.ticks_ms(), self.synced_at) >= RESYNC_EVERY_MS:
            self.sync_clock()

    def uart(self, settings: "dict[str, Any]") -> Rs485Uart:
        return Rs485Uart(settings)

    def now_s(self) -> int:
        return int(time.time()) + EPOCH_OFFSET_S

    def ticks_ms(self) -> "Any":  # an opaque ticks value; compare with ticks_diff
        return time.ticks_ms()

    def ticks_diff(self, a: "Any", b: "Any") -> int:
        return time.ticks_diff(a, b)

    def clock_synced(self) -> bool:
        return self.synced

    def sleep_ms(self, ms: int) -> None:
        time.sleep_ms(ms)

    def reset(self) -> None:
        machine.reset()
