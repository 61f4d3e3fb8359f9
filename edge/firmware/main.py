"""Runs after boot.py: the agent loop, forever (app.run restarts the board on a crash)."""

import app

app.run()
