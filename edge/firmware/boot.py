"""Runs first on every reset: bring the network and the clock up before main.py.

A board that cannot join Wi-Fi or reach an SNTP server still boots: the agent queues
batches on flash and marks them clock-unsynced until both come back.
"""

import board

board.BOARD.boot()
