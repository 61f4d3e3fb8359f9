"""Readings-log figures: append rate, proof sizes and proof times for growing logs.

For each log size n the log is built from empty twice: with one `append` a leaf (one
store write a leaf, the slowest way in) and with one `extend` per block of 1000 leaves,
as a block commit does.  Proofs are then made and verified against the full tree for
`--samples` seeded random choices: inclusion of a random leaf, and consistency from a
random older size.  Times are per call, the mean over the samples.

    python bench/bench_merkle.py [--sizes 1000,10000] [--samples 2000] [--leaf-bytes 200]
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from aggregator.merkle import HASH_SIZE_BYTES, MerkleLog, verify_consistency, verify_inclusion

SIZES = (10**3, 10**4, 10**5, 10**6)
CHUNK_LEAVES = 10_000  # leaves made ahead of the timed loop, so making them is not timed
HEADER = (
    "   leaves   append/s   extend/s |"
    "  incl B  gen us  ver us |  cons B  gen us  ver us | maxrss MB"
)
BLOCK_LEAVES = 1_000  # leaves a block commits with one `extend`, one store write

T = TypeVar("T")
R = TypeVar("R")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    print(f"seed={args.seed} samples={args.samples} leaf_bytes={args.leaf_bytes}")
    print(HEADER)
    for size in sizes:
        print(_row(size, args.samples, args.leaf_bytes, random.Random(args.seed)), flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--leaf-bytes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    return parser


def _row(size: int, samples: int, leaf_bytes: int, rng: random.Random) -> str:
    append_rate = _build(size, leaf_bytes, 1)[1]  # that log is dropped at once
    log, extend_rate = _build(size, leaf_bytes, BLOCK_LEAVES)
    root = log.root()
    indices = [rng.randrange(size) for _ in range(samples)]
    olds = [rng.randrange(1, size) for _ in range(samples)]
    incl_gen_us, incl = _time(lambda i: log.inclusion_proof(i, size), indices)
    cons_gen_us, cons = _time(lambda m: log.consistency_proof(m, size), olds)
    leaves = [log.leaf(i) for i in indices]
    old_roots = [log.root(m) for m in olds]
    incl_ver_us, _ = _time(
        lambda k: verify_inclusion(leaves[k], indices[k], size, incl[k], root), range(samples)
    )
    cons_ver_us, _ = _time(
        lambda k: verify_consistency(olds[k], size, old_roots[k], root, cons[k]), range(samples)
    )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (
        f"{size:>9} {append_rate:>10.0f} {extend_rate:>10.0f} |"
        f" {_mean_bytes(incl):>7.0f} {incl_gen_us:>7.1f} {incl_ver_us:>7.1f} |"
        f" {_mean_bytes(cons):>7.0f} {cons_gen_us:>7.1f}"
        f" {cons_ver_us:>7.1f} | {rss_mb:>9.0f}"
    )


def _build(size: int, leaf_bytes: int, batch_leaves: int) -> tuple[MerkleLog, float]:
    """A log of `size` leaves: `append` one at a time (batch 1) or `extend` in batches."""
    log = MerkleLog()
    elapsed_s = 0.0
    for start in range(0, size, CHUNK_LEAVES):
        chunk = [_leaf(i, leaf_bytes) for i in range(start, min(start + CHUNK_LEAVES, size))]
        begin = time.perf_counter()
        if batch_leaves == 1:
            for data in chunk:
                log.append(data)
        else:
            for offset in range(0, len(chunk), batch_leaves):
                log.extend(chunk[offset : offset + batch_leaves])
        elapsed_s += time.perf_counter() - begin
    return log, size / elapsed_s


def _leaf(index: int, leaf_bytes: int) -> bytes:
    return index.to_bytes(8, "big").ljust(leaf_bytes, b"r")


def _time(call: Callable[[T], R], inputs: Sequence[T]) -> tuple[float, list[R]]:
    begin = time.perf_counter()
    results = [call(x) for x in inputs]
    return (time.perf_counter() - begin) / len(inputs) * 1e6, results


def _mean_bytes(proofs: list[list[bytes]]) -> float:
    return sum(len(p) for p in proofs) * HASH_SIZE_BYTES / len(proofs)


if __name__ == "__main__":
    sys.exit(main())
