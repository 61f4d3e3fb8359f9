"""Tendermint-style BFT consensus for GridLedger: a pure core, its WAL and its simulation.

    messages.py      signed proposals and votes, their signing bytes and wire codec
    validators.py    voting power, quorums, proposer rotation by power
    certificate.py   commit certificates and their offline verification
    core.py          the state machine: step(event, now_ms) -> [Action]
    wal.py           the write-ahead log the shell writes before sending
    sim.py           a seeded simulation of a whole cluster (python -m aggregator.consensus.sim)

docs/consensus.md describes the whole; core.py's docstring the state machine.
"""

from .certificate import CommitCertificate, verify_certificate
from .core import Config, Core, Timeouts
from .messages import Proposal, Vote, value_id
from .validators import ValidatorSet
from .wal import FileWal, MemoryWal, Wal

__all__ = [
    "CommitCertificate",
    "Config",
    "Core",
    "FileWal",
    "MemoryWal",
    "Proposal",
    "Timeouts",
    "ValidatorSet",
    "Vote",
    "Wal",
    "value_id",
    "verify_certificate",
]
