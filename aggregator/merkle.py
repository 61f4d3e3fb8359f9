"""The readings log: an append-only RFC 9162 Merkle tree with proofs for every past size.

Theory of operation
-------------------
Every committed reading is one leaf.  Hashing follows RFC 9162 §2.1.1 with SHA-256: a
leaf hash is SHA-256(0x00 || data), an interior node SHA-256(0x01 || left || right), and
the Merkle Tree Hash (MTH) of the empty list is SHA-256 of the empty string.  The tree over
n > 1 leaves splits at k, the largest power of two below n, so its left part is always a
*perfect* subtree: 2^level leaves starting at a multiple of 2^level.  A perfect subtree
never changes once its last leaf is in; only the right edge of the tree moves.

Storage layout.  The store (`NodeStore`) holds exactly the perfect subtrees, keyed by
(level, index): the node over leaves [index * 2^level, (index + 1) * 2^level).  Level 0
holds the leaf hashes.  n leaves take 2n - popcount(n) hashes, 64 bytes a leaf.  Why:

- Rows are written once and never updated, so an SQLite table
  `merkle_node(level, idx, hash, PRIMARY KEY (level, idx)) WITHOUT ROWID` fits, one
  transaction a block, and nothing has to be versioned by tree size.
- Every past size can still be served.  A node of the tree of size m is either perfect
  (one read) or on its right edge, [a, m), whose hash folds the perfect subtrees that
  binary-decompose m - a (at most log2 m reads).  An inclusion path (§2.1.3.1) or a
  consistency proof (§2.1.4.1) holds at most one right-edge node, so a proof costs
  O(log n) reads and hashes, and root(m) popcount(m) reads.
- Keeping only leaf hashes would make every proof O(n); keeping the right-edge nodes
  would need one copy per tree size.

Appends read nothing: the log keeps the compact range of the current tree in memory (the
perfect subtrees that decompose n, largest first, at most 64).  A new leaf merges with
entries of its own level, so appending leaf n writes 1 + (trailing one bits of n) nodes:
O(log n) at worst, 2 on average.

Verification.  `verify_inclusion` and `verify_consistency` are pure functions that follow
the numbered steps of §2.1.3.2 and §2.1.4.2; comments cite the steps.  Input of any shape
either verifies or raises a ProofError subclass.  §2.1.4.1 defines consistency proofs only
for 0 < first < second; two more cases are accepted, each with an empty proof: first ==
second with equal roots, and first == 0 with the empty-tree root as first_hash (which
says nothing about second_hash: every tree extends the empty one).  A proof binds the
roots, and a tree size only as far as the size shapes the path (leaf 0 walks alike in
trees of 5 to 8 leaves), so a verifier takes each size and its root from the same header.

Limits
------
    HASH_SIZE_BYTES   32        SHA-256, the only hash the log uses (§2.1.1).
    TREE_SIZE_MAX     2^64 - 1  tree sizes and leaf indices travel as uint64 (§4).
    PROOF_HASHES_MAX  64        an inclusion path has at most ceil(log2 n) hashes and a
                                consistency proof at most ceil(log2 n) + 1; both fit 64
                                for n <= 2^63.  Bounds a verifier to ~130 hash calls.
    LOG_LEAVES_MAX    2^63      so every proof this log makes fits PROOF_HASHES_MAX; at a
                                million readings a second that is 290 000 years away.
    LEAF_BYTES_MAX    65536     a leaf is one encoded reading record, a few hundred bytes;
                                the bound caps the hashing one append can cost.

Errors
------
    GridLedgerError
    ├── LocalProtocolError              local.misuse
    │   └── LogRangeError               log.range          size or index beyond the log
    └── RemoteProtocolError             remote.invalid
        └── ProofError                  proof.invalid
            ├── ProofFormatError        proof.format       not an int, a list, 32 bytes
            ├── ProofLimitError         proof.limit        more than PROOF_HASHES_MAX
            ├── ProofSizeError          proof.size         index or size out of range
            ├── InclusionProofError     proof.inclusion    §2.1.3.2 failed
            └── ConsistencyProofError   proof.consistency  §2.1.4.2 failed
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Protocol

from edge.portable.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE_BYTES",
    "LEAF_BYTES_MAX",
    "LOG_LEAVES_MAX",
    "PROOF_HASHES_MAX",
    "TREE_SIZE_MAX",
    "ConsistencyProofError",
    "InclusionProofError",
    "LogRangeError",
    "MemoryNodeStore",
    "MerkleLog",
    "Node",
    "NodeStore",
    "ProofError",
    "ProofFormatError",
    "ProofLimitError",
    "ProofSizeError",
    "leaf_hash",
    "node_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE_BYTES = 32
TREE_SIZE_MAX = 2**64 - 1
PROOF_HASHES_MAX = 64
LOG_LEAVES_MAX = 2**63
LEAF_BYTES_MAX = 65536

EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


# -- errors ----------------------------------------------------------------------------


class LogRangeError(LocalProtocolError):
    """A size or index the log does not hold (the caller should have checked)."""

    code = "log.range"


class ProofError(RemoteProtocolError):
    """A proof, or the claim it comes with, does not verify."""

    code = "proof.invalid"


class ProofFormatError(ProofError):
    code = "proof.format"


class ProofLimitError(ProofError):
    code = "proof.limit"


class ProofSizeError(ProofError):
    code = "proof.size"


class InclusionProofError(ProofError):
    code = "proof.inclusion"


class ConsistencyProofError(ProofError):
    code = "proof.consistency"


# -- hashing (§2.1.1) ------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _perfect_ranges(start: int, end: int) -> list[tuple[int, int]]:
    """(level, index) of the perfect subtrees that cover [start, end), left to right."""
    ranges = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start:
            level = min(level, (start & -start).bit_length() - 1)
        ranges.append((level, start >> level))
        start += 1 << level
    return ranges


# -- storage ---------------------------------------------------------------------------

Node = tuple[int, int, bytes]
"""(level, index, hash) of one perfect subtree."""


class NodeStore(Protocol):
    """Where the perfect-subtree hashes live (see the module docstring for the layout)."""

    def leaf_count(self) -> int:
        """How many leaves the stored nodes cover."""
        ...

    def node(self, level: int, index: int) -> bytes:
        """The hash of a perfect subtree that `append` has written."""
        ...

    def append(self, leaf_count: int, nodes: Sequence[Node]) -> None:
        """Write `nodes` and the new leaf count atomically.

        Within one level the indices arrive in increasing order and continue where the
        level ended, so a store may keep each level as a plain array.
        """
        ...


class MemoryNodeStore:
    """NodeStore in memory: one bytearray of packed 32-byte hashes per level.

    Packing costs 64 bytes a leaf, against ~150 with one bytes object per hash, so a
    log of a million leaves fits in 64 MB.
    """

    def __init__(self) -> None:
        self._levels: list[bytearray] = []
        self._leaf_count = 0

    def leaf_count(self) -> int:
        return self._leaf_count

    def node(self, level: int, index: int) -> bytes:
        offset = index * HASH_SIZE_BYTES
        return bytes(self._levels[level][offset : offset + HASH_SIZE_BYTES])

    def append(self, leaf_count: int, nodes: Sequence[Node]) -> None:
        self._check_order(leaf_count, nodes)
        levels = self._levels
        for level, _, value in nodes:
            if level == len(levels):
                levels.append(bytearray())
            levels[level] += value
        self._leaf_count = leaf_count

    def _check_order(self, leaf_count: int, nodes: Sequence[Node]) -> None:
        """Refuse, before writing anything, nodes that would leave a gap or overwrite."""
        ends: dict[int, int] = {}  # next free index of each level the nodes touch
        top = len(self._levels)
        for level, index, value in nodes:
            if level not in ends:
                if level > top:
                    raise LocalProtocolError(f"node ({level}, {index}) skips a level")
                if level == top:
                    top += 1
                ends[level] = self._level_size(level)
            if index != ends[level] or len(value) != HASH_SIZE_BYTES:
                raise LocalProtocolError(f"node ({level}, {index}) out of order")
            ends[level] += 1
        if leaf_count != ends.get(0, self._level_size(0)):
            raise LocalProtocolError(f"leaf count {leaf_count} disagrees with the nodes")

    def _level_size(self, level: int) -> int:
        levels = self._levels
        return len(levels[level]) // HASH_SIZE_BYTES if level < len(levels) else 0


# -- the log ---------------------------------------------------------------------------


class MerkleLog:
    """The append-only log over a NodeStore; answers roots and proofs for any past size."""

    def __init__(self, store: NodeStore | None = None) -> None:
        self._store: NodeStore = MemoryNodeStore() if store is None else store
        self._size = self._store.leaf_count()
        # The compact range of the current tree: (level, hash), largest subtree first.
        self._frontier = [
            (level, self._store.node(level, index))
            for level, index in _perfect_ranges(0, self._size)
        ]

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    def append(self, data: bytes) -> int:
        """Append one leaf; return its index."""
        self.extend((data,))
        return self._size - 1

    def extend(self, leaves: Iterable[bytes]) -> int:
        """Append leaves in order with a single store write; return the new size."""
        frontier = list(self._frontier)
        nodes: list[Node] = []
        size = self._size
        for data in leaves:
            _check_leaf(data, size)
            _push(frontier, nodes, leaf_hash(data), size)
            size += 1
        self._store.append(size, nodes)
        self._size, self._frontier = size, frontier
        return size

    def leaf(self, index: int) -> bytes:
        """The leaf hash at `index`."""
        self._check_sizes(index, self._size)
        if index == self._size:
            raise LogRangeError(f"no leaf {index} in a log of {self._size}")
        return self._store.node(0, index)

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first `size` leaves (default: all of them)."""
        if size is None:
            size = self._size
        self._check_sizes(size, self._size)
        if size == self._size:
            return _fold([h for _, h in self._frontier])
        return self._subtree_hash(0, size)

    def inclusion_proof(self, leaf_index: int, tree_size: int) -> list[bytes]:
        """PATH(leaf_index, D[tree_size]) of §2.1.3.1, the deepest sibling first."""
        self._check_sizes(leaf_index, tree_size)
        if leaf_index == tree_size:
            raise LogRangeError(f"no leaf {leaf_index} in a tree of {tree_size}")
        ranges = []
        lo, hi = 0, tree_size
        while hi - lo > 1:
            k = _split(hi - lo)
            if leaf_index < lo + k:
                ranges.append((lo + k, hi))
                hi = lo + k
            else:
                ranges.append((lo, lo + k))
                lo += k
        return [self._subtree_hash(a, b) for a, b in reversed(ranges)]

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[new_size]) of §2.1.4.1; empty when old_size is 0 or new_size."""
        self._check_sizes(old_size, new_size)
        if old_size in (0, new_size):
            return []
        ranges = []
        lo, hi, complete = 0, new_size, True
        while old_size != hi:
            k = _split(hi - lo)
            if old_size <= lo + k:
                ranges.append((lo + k, hi))
                hi = lo + k
            else:
                ranges.append((lo, lo + k))
                lo, complete = lo + k, False
        if not complete:
            ranges.append((lo, hi))
        return [self._subtree_hash(a, b) for a, b in reversed(ranges)]

    def _check_sizes(self, low: int, high: int) -> None:
        """Raise unless 0 <= low <= high <= size (all ints)."""
        for value in (low, high):
            if not isinstance(value, int) or isinstance(value, bool):
                raise LogRangeError(f"{value!r} is not an integer")
        if not 0 <= low <= high <= self._size:
            raise LogRangeError(f"need 0 <= {low} <= {high} <= log size {self._size}")

    def _subtree_hash(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end), a perfect or right-edge node of some tree."""
        node = self._store.node
        return _fold([node(level, index) for level, index in _perfect_ranges(start, end)])


def _check_leaf(data: bytes, size: int) -> None:
    if not isinstance(data, bytes):
        raise LocalProtocolError(f"leaf is {type(data).__name__}, not bytes")
    if len(data) > LEAF_BYTES_MAX:
        raise LocalProtocolError(f"leaf of {len(data)} bytes > {LEAF_BYTES_MAX}")
    if size >= LOG_LEAVES_MAX:
        raise LocalProtocolError(f"log is full at {LOG_LEAVES_MAX} leaves")


def _push(frontier: list[tuple[int, bytes]], nodes: list[Node], value: bytes, index: int) -> None:
    """Add leaf `index` to the compact range, recording every perfect subtree it completes."""
    level = 0
    nodes.append((0, index, value))
    while frontier and frontier[-1][0] == level:
        value = node_hash(frontier.pop()[1], value)
        level, index = level + 1, index >> 1
        nodes.append((level, index, value))
    frontier.append((level, value))


def _fold(hashes: list[bytes]) -> bytes:
    """MTH of a right edge from its perfect subtrees, largest first: h0 . (h1 . (h2 ...))."""
    if not hashes:
        return EMPTY_ROOT
    value = hashes[-1]
    for left in reversed(hashes[:-1]):
        value = node_hash(left, value)
    return value


# -- verification (§2.1.3.2, §2.1.4.2) -------------------------------------------------


def verify_inclusion(
    leaf_hash: bytes, leaf_index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that `leaf_hash` is leaf `leaf_index` of the tree of `tree_size` with `root`.

    Returns None on success; raises a ProofError subclass saying what broke.
    """
    path = _check_path(proof)
    _check_hash(leaf_hash, "leaf hash")
    _check_hash(root, "root")
    _check_uint64(leaf_index, "leaf_index")
    _check_uint64(tree_size, "tree_size")
    # Step 1: leaf_index must be below tree_size.
    if leaf_index >= tree_size:
        raise ProofSizeError(f"leaf_index {leaf_index} >= tree_size {tree_size}")
    if _inclusion_root(leaf_hash, leaf_index, tree_size, path) != root:
        # Step 5, second half: r must equal root_hash.
        raise InclusionProofError("computed root differs from the given root")


def _inclusion_root(value: bytes, leaf_index: int, tree_size: int, path: list[bytes]) -> bytes:
    """Steps 2 to 5 (sn) of §2.1.3.2; returns r."""
    fn, sn = leaf_index, tree_size - 1  # step 2
    r = value  # step 3
    for p in path:  # step 4
        if sn == 0:  # step 4a
            raise InclusionProofError("path is longer than tree_size allows")
        if fn & 1 or fn == sn:  # step 4b
            r = node_hash(p, r)  # step 4b.i
            while not fn & 1 and fn != 0:  # step 4b.ii
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)  # step 4b, otherwise
        fn, sn = fn >> 1, sn >> 1  # step 4c
    if sn != 0:  # step 5, first half
        raise InclusionProofError("path is shorter than tree_size needs")
    return r


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of `new_size` with `new_root` extends the one of `old_size`.

    Returns None on success; raises a ProofError subclass saying what broke.
    """
    path = _check_path(proof)
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    _check_uint64(old_size, "old_size")
    _check_uint64(new_size, "new_size")
    if old_size > new_size:
        raise ProofSizeError(f"old_size {old_size} > new_size {new_size}")
    if old_size in (0, new_size):
        _check_trivial(old_size, new_size, old_root, new_root, path)
        return
    fr, sr, sn = _consistency_roots(old_size, new_size, old_root, path)
    # Step 7: sn must be 0, fr must equal first_hash and sr second_hash.
    if sn != 0:
        raise ConsistencyProofError("path is shorter than new_size needs")
    if fr != old_root:
        raise ConsistencyProofError("computed old root differs from the given one")
    if sr != new_root:
        raise ConsistencyProofError("computed new root differs from the given one")


def _check_trivial(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: list[bytes]
) -> None:
    """The cases outside §2.1.4.2: old_size 0, or old_size == new_size."""
    if path:
        raise ConsistencyProofError(f"{len(path)} hashes where the proof is empty")
    if old_size == 0 and old_root != EMPTY_ROOT:
        raise ConsistencyProofError("old root of size 0 is not the empty-tree hash")
    if old_size == new_size and old_root != new_root:
        raise ConsistencyProofError("equal sizes with different roots")


def _consistency_roots(
    first: int, second: int, first_hash: bytes, path: list[bytes]
) -> tuple[bytes, bytes, int]:
    """Steps 1 to 6 of §2.1.4.2 for 0 < first < second; returns (fr, sr, sn)."""
    if not path:  # step 1
        raise ConsistencyProofError("empty proof for different sizes")
    if first & (first - 1) == 0:  # step 2: first is an exact power of 2
        path = [first_hash, *path]
    fn, sn = first - 1, second - 1  # step 3
    while fn & 1:  # step 4
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:  # step 6a
            raise ConsistencyProofError("path is longer than new_size allows")
        if fn & 1 or fn == sn:  # step 6b
            fr = node_hash(c, fr)  # step 6b.i
            sr = node_hash(c, sr)  # step 6b.ii
            while not fn & 1 and fn != 0:  # step 6b.iii
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)  # step 6b, otherwise
        fn, sn = fn >> 1, sn >> 1  # step 6c
    return fr, sr, sn


def _check_path(proof: object) -> list[bytes]:
    if not isinstance(proof, (list, tuple)):
        raise ProofFormatError(f"proof is {type(proof).__name__}, not a list")
    if len(proof) > PROOF_HASHES_MAX:
        raise ProofLimitError(f"proof of {len(proof)} hashes > {PROOF_HASHES_MAX}")
    for position, value in enumerate(proof):
        _check_hash(value, f"proof[{position}]")
    return list(proof)


def _check_hash(value: object, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE_BYTES:
        raise ProofFormatError(f"{what} is not a {HASH_SIZE_BYTES}-byte hash")


def _check_uint64(value: object, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProofFormatError(f"{what} is {type(value).__name__}, not an integer")
    if not 0 <= value <= TREE_SIZE_MAX:
        raise ProofSizeError(f"{what} {value} does not fit uint64")
