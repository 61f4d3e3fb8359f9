"""GridLedger: signed smart-meter readings, from the meter register to a BFT ledger."""

__version__ = "0.1.0"
