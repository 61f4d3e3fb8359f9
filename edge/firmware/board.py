"""Picks the board adapter: the ESP32 one on a board, the Unix one under the unix port.

An adapter provides boot() (network, clock), uart(settings) -> object with write(data)
and read() (what has arrived, possibly b""), now_s() (Unix seconds), ticks_ms(),
clock_synced(), sleep_ms(ms), the flash root directory, and reset().
"""

import sys

if sys.platform == "esp32":
    import board_esp32 as _adapter
else:
    import board_unix as _adapter

BOARD = _adapter.Board()
