"""A committed reading is provable offline: leaf, inclusion proof, header, commit, keys."""

from __future__ import annotations

import hashlib

import pytest

from aggregator import tx
from aggregator.app import leaf_bytes
from aggregator.block import decode_block, verify_commit
from aggregator.engine import Committed, EngineLimits
from aggregator.merkle import InclusionProofError, leaf_hash, verify_inclusion
from edge import crypto
from edge.portable.verify import verify_message
from tests.aggregator.helpers import CHAIN_ID, NODE_ID, T0, World

LIMITS = EngineLimits(
    txs_max=3, bytes_max=1 << 20, timeout_s=1.0, mempool_txs_max=64, mempool_bytes_max=1 << 22
)


def test_a_reading_is_proven_from_the_genesis_keys_alone(world: World) -> None:
    engine = world.engine(limits=LIMITS)
    blocks = []
    for seq in range(1, 8):
        engine.submit(world.batch_tx(f"gw-{seq % 3}", seq, meters=("M1", "M2")), T0 + seq)
    blocks += [a for a in engine.handle_timeout(T0 + 100) if isinstance(a, Committed)]
    assert [len(c.block.txs) for c in blocks] == [3, 3, 1]
    target = blocks[1]
    tx_index = 2
    result = target.results[tx_index]
    message = tx.decode(target.block.txs[tx_index]).body
    # What the bundle holds: the message, the leaf index, the proof, the header, a commit.
    leaf_index = result.first_leaf + 1  # the second meter group
    size = target.block.header.log_size
    proof = engine.app.log.inclusion_proof(leaf_index, size)
    block_bytes = target.block.encode()
    commit = engine.store.seen_commit(target.block.height)
    assert commit is not None

    # The verifier's side: only the registrar and validator keys of the genesis file.
    block = decode_block(block_bytes)
    verify_commit(commit, CHAIN_ID, {NODE_ID: (world.node.public_key(), 1)}, crypto.verify)
    assert commit.block_hash == block.hash()
    verified = verify_message(
        message, world.registrar.public_key(), block.header.time_s, crypto.verify
    )
    group = verified.batch.meters[1]
    data = leaf_bytes(
        verified.batch.device_id,
        verified.batch.seq,
        group.meter_id,
        hashlib.sha256(message).digest(),
    )
    verify_inclusion(leaf_hash(data), leaf_index, size, proof, block.header.log_root)
    with pytest.raises(InclusionProofError):
        other = leaf_bytes(
            verified.batch.device_id,
            verified.batch.seq + 1,
            group.meter_id,
            hashlib.sha256(message).digest(),
        )
        verify_inclusion(leaf_hash(other), leaf_index, size, proof, block.header.log_root)
