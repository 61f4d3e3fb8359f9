"""The readings log against the RFC 9162 definitions, and its verifiers against bad input.

A reference MTH, PATH and PROOF written straight from the recursive definitions of RFC 9162
§2.1.1, §2.1.3.1 and §2.1.4.1 must agree with the log.  Every proof the log makes must
verify, and any change to it must fail with ProofError.

A proof binds the roots; a tree size it binds only as far as the size shapes the path, so
a proof for size n may also walk correctly for some other size n' (RFC 9162 §2.1.3.2 makes
the same walk for leaf 0 in trees of 5 to 8 leaves).  A changed size is therefore checked
against the root the log had at that size: the claim a forger would have to make.
Leaves are all distinct; with equal neighbours, swapped children hash alike.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from aggregator.merkle import (
    EMPTY_ROOT,
    LEAF_BYTES_MAX,
    PROOF_HASHES_MAX,
    TREE_SIZE_MAX,
    ConsistencyProofError,
    InclusionProofError,
    LogRangeError,
    MemoryNodeStore,
    MerkleLog,
    Node,
    ProofError,
    ProofFormatError,
    ProofLimitError,
    ProofSizeError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from edge.portable.errors import LocalProtocolError, RemoteProtocolError
from tests.ledger.seeding import SEED

N = 1100  # past 2^10, so sizes cross a power of two
DATA = [b"reading %d" % i for i in range(N)]
LOG = MerkleLog()
LOG.extend(DATA)
ROOTS = [LOG.root(size) for size in range(N + 1)]

fuzzed = settings(database=None, max_examples=200, deadline=None)


# -- the RFC 9162 definitions, recursively ---------------------------------------------


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    """MTH(D[n]), §2.1.1."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]), §2.1.3.1."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b), §2.1.4.1."""
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


@pytest.mark.parametrize("size", range(71))
def test_root_matches_the_recursive_definition(size: int) -> None:
    log = MerkleLog()
    log.extend(DATA[:size])
    assert log.root() == ref_mth(DATA[:size])  # from the compact range
    assert LOG.root(size) == ref_mth(DATA[:size])  # from stored nodes, a past size


def test_append_one_by_one_matches_extend() -> None:
    log = MerkleLog()
    for i, data in enumerate(DATA[:70]):
        assert log.append(data) == i
        assert log.root() == ROOTS[i + 1]


@pytest.mark.parametrize("size", range(1, 41))
def test_proofs_match_the_recursive_definitions(size: int) -> None:
    d = DATA[:size]
    for m in range(size):
        assert LOG.inclusion_proof(m, size) == ref_path(m, d)
    for m in range(1, size):
        assert LOG.consistency_proof(m, size) == ref_subproof(m, d, True)


def test_every_small_proof_verifies() -> None:
    for n in range(1, 70):
        for m in range(n):
            verify_inclusion(leaf_hash(DATA[m]), m, n, LOG.inclusion_proof(m, n), ROOTS[n])
        for m in range(n + 1):
            verify_consistency(m, n, ROOTS[m], ROOTS[n], LOG.consistency_proof(m, n))


def test_proofs_stay_logarithmic() -> None:
    for n in (2, 3, 1000, N):
        bound = (n - 1).bit_length()
        assert max(len(LOG.inclusion_proof(i, n)) for i in range(n)) <= bound
        assert max(len(LOG.consistency_proof(m, n)) for m in range(n)) <= bound + 1


# -- hypothesis: generated proofs verify, changed ones fail ----------------------------

sizes = st.integers(1, N)


@st.composite
def inclusions(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(sizes)
    return draw(st.integers(0, size - 1)), size


@st.composite
def consistencies(draw: st.DrawFn, low: int = 0) -> tuple[int, int]:
    new = draw(st.integers(max(low, 1), N))
    return draw(st.integers(low, new)), new


def _flip(value: bytes, position: int, mask: int) -> bytes:
    position %= len(value)
    return value[:position] + bytes([value[position] ^ mask]) + value[position + 1 :]


@seed(SEED)
@fuzzed
@given(inclusions())
def test_generated_inclusion_proofs_verify(case: tuple[int, int]) -> None:
    index, size = case
    verify_inclusion(LOG.leaf(index), index, size, LOG.inclusion_proof(index, size), ROOTS[size])


@seed(SEED)
@fuzzed
@given(consistencies())
def test_generated_consistency_proofs_verify(case: tuple[int, int]) -> None:
    old, new = case
    verify_consistency(old, new, ROOTS[old], ROOTS[new], LOG.consistency_proof(old, new))


@seed(SEED)
@fuzzed
@given(inclusions(), st.data(), st.integers(0, 31), st.integers(1, 255))
def test_any_flipped_inclusion_byte_fails(
    case: tuple[int, int], data: st.DataObject, position: int, mask: int
) -> None:
    index, size = case
    args: list[Any] = [LOG.leaf(index), index, size, LOG.inclusion_proof(index, size), ROOTS[size]]
    target = data.draw(st.sampled_from(["leaf", "root", *range(len(args[3]))]))
    if target == "leaf":
        args[0] = _flip(args[0], position, mask)
    elif target == "root":
        args[4] = _flip(args[4], position, mask)
    else:
        args[3][target] = _flip(args[3][target], position, mask)
    with pytest.raises(InclusionProofError):
        verify_inclusion(*args)


@seed(SEED)
@fuzzed
@given(consistencies(low=1), st.data(), st.integers(0, 31), st.integers(1, 255))
def test_any_flipped_consistency_byte_fails(
    case: tuple[int, int], data: st.DataObject, position: int, mask: int
) -> None:
    old, new = case
    args: list[Any] = [old, new, ROOTS[old], ROOTS[new], LOG.consistency_proof(old, new)]
    target = data.draw(st.sampled_from(["old", "new", *range(len(args[4]))]))
    if target == "old":
        args[2] = _flip(args[2], position, mask)
    elif target == "new":
        args[3] = _flip(args[3], position, mask)
    else:
        args[4][target] = _flip(args[4][target], position, mask)
    with pytest.raises(ConsistencyProofError):
        verify_consistency(*args)


@seed(SEED)
@fuzzed
@given(inclusions(), st.data())
def test_any_other_index_fails(case: tuple[int, int], data: st.DataObject) -> None:
    index, size = case
    other = data.draw(st.integers(0, TREE_SIZE_MAX).filter(lambda i: i != index))
    proof = LOG.inclusion_proof(index, size)
    with pytest.raises(ProofError):
        verify_inclusion(LOG.leaf(index), other, size, proof, ROOTS[size])


@seed(SEED)
@fuzzed
@given(inclusions(), st.data())
def test_any_other_tree_size_fails(case: tuple[int, int], data: st.DataObject) -> None:
    index, size = case
    other = data.draw(sizes.filter(lambda n: n != size))
    proof = LOG.inclusion_proof(index, size)
    with pytest.raises(ProofError):
        verify_inclusion(LOG.leaf(index), index, other, proof, ROOTS[other])


@st.composite
def strict_consistencies(draw: st.DrawFn) -> tuple[int, int]:
    """0 < old < new: the proofs that are not empty."""
    new = draw(st.integers(2, N))
    return draw(st.integers(1, new - 1)), new


@seed(SEED)
@fuzzed
@given(strict_consistencies(), st.data())
def test_any_other_consistency_size_fails(case: tuple[int, int], data: st.DataObject) -> None:
    old, new = case
    proof = LOG.consistency_proof(old, new)
    old2 = data.draw(st.integers(0, new).filter(lambda m: m != old))
    with pytest.raises(ProofError):
        verify_consistency(old2, new, ROOTS[old2], ROOTS[new], proof)
    new2 = data.draw(st.integers(old, N).filter(lambda n: n != new))
    with pytest.raises(ProofError):
        verify_consistency(old, new2, ROOTS[old], ROOTS[new2], proof)


def test_an_empty_old_tree_binds_no_new_root() -> None:
    verify_consistency(0, 5, EMPTY_ROOT, leaf_hash(b"anything"), [])
    with pytest.raises(ConsistencyProofError):
        verify_consistency(0, 5, ROOTS[1], ROOTS[5], [])


# -- hypothesis: garbage in, ProofError out --------------------------------------------

garbage = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.integers(0, 70),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.binary(min_size=32, max_size=32),
    st.sampled_from([EMPTY_ROOT, ROOTS[1], ROOTS[7], bytearray(32), memoryview(bytes(32))]),
)
paths = st.one_of(
    garbage,
    st.lists(st.one_of(garbage, st.sampled_from(ROOTS[:9])), max_size=70),
    st.tuples(st.binary(min_size=32, max_size=32)),
    st.just([EMPTY_ROOT] * (PROOF_HASHES_MAX + 1)),
)


@seed(SEED)
@fuzzed
@given(garbage, garbage, garbage, paths, garbage)
def test_inclusion_raises_only_proof_error(
    leaf: Any, index: Any, size: Any, path: Any, root: Any
) -> None:
    with contextlib.suppress(ProofError):
        verify_inclusion(leaf, index, size, path, root)


@seed(SEED)
@fuzzed
@given(garbage, garbage, garbage, garbage, paths)
def test_consistency_raises_only_proof_error(
    old: Any, new: Any, old_root: Any, new_root: Any, path: Any
) -> None:
    with contextlib.suppress(ProofError):
        verify_consistency(old, new, old_root, new_root, path)


@seed(SEED)
@fuzzed
@given(st.data())
def test_near_miss_paths_raise_only_proof_error(data: st.DataObject) -> None:
    """Right shapes, wrong numbers: sizes near the real ones and paths from other proofs."""
    index, size = data.draw(inclusions())
    other_index, other_size = data.draw(inclusions())
    path = LOG.inclusion_proof(other_index, other_size)
    with contextlib.suppress(ProofError):
        verify_inclusion(LOG.leaf(index), index, size, path, ROOTS[size])
    old, new = data.draw(consistencies())
    old2, new2 = data.draw(consistencies())
    with contextlib.suppress(ProofError):
        verify_consistency(old, new, ROOTS[old], ROOTS[new], LOG.consistency_proof(old2, new2))


# -- limits, errors, store -------------------------------------------------------------


def test_limits() -> None:
    too_long = [EMPTY_ROOT] * (PROOF_HASHES_MAX + 1)
    with pytest.raises(ProofLimitError):
        verify_inclusion(EMPTY_ROOT, 0, 2**64 - 1, too_long, EMPTY_ROOT)
    with pytest.raises(ProofLimitError):
        verify_consistency(1, 2**64 - 1, EMPTY_ROOT, EMPTY_ROOT, too_long)
    with pytest.raises(ProofSizeError):
        verify_inclusion(EMPTY_ROOT, 0, 2**64, [], EMPTY_ROOT)
    with pytest.raises(ProofSizeError):
        verify_consistency(-1, 1, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ProofFormatError):
        verify_inclusion(EMPTY_ROOT, True, 2, [EMPTY_ROOT], EMPTY_ROOT)
    with pytest.raises(LocalProtocolError):
        MerkleLog().append(bytes(LEAF_BYTES_MAX + 1))
    MerkleLog().append(bytes(LEAF_BYTES_MAX))


def test_deepest_proof_at_the_largest_size_fits() -> None:
    # Leaf 0 of a 2^64 - 1 leaf tree sits 64 levels down: every step hashes p on the right.
    path = [leaf_hash(b"%d" % i) for i in range(64)]
    root = leaf_hash(b"leaf")
    for p in path:
        root = hashlib.sha256(b"\x01" + root + p).digest()
    verify_inclusion(leaf_hash(b"leaf"), 0, TREE_SIZE_MAX, path, root)


def test_error_tree_and_codes() -> None:
    codes = {
        ProofError: "proof.invalid",
        ProofFormatError: "proof.format",
        ProofLimitError: "proof.limit",
        ProofSizeError: "proof.size",
        InclusionProofError: "proof.inclusion",
        ConsistencyProofError: "proof.consistency",
    }
    for error, code in codes.items():
        assert error.code == code
        assert issubclass(error, ProofError)
    assert issubclass(ProofError, RemoteProtocolError)
    assert issubclass(LogRangeError, LocalProtocolError)
    assert LogRangeError.code == "log.range"


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("inclusion_proof", (5, 5)),
        ("inclusion_proof", (0, N + 1)),
        ("inclusion_proof", (-1, 3)),
        ("inclusion_proof", ("0", 3)),
        ("consistency_proof", (3, 2)),
        ("consistency_proof", (0, N + 1)),
        ("root", (N + 1,)),
        ("root", (-1,)),
        ("leaf", (N,)),
        ("leaf", (None,)),
    ],
)
def test_questions_beyond_the_log(call: str, args: tuple[Any, ...]) -> None:
    with pytest.raises(LogRangeError):
        getattr(LOG, call)(*args)


def test_reopening_a_store_continues_the_log() -> None:
    store = MemoryNodeStore()
    MerkleLog(store).extend(DATA[:37])
    reopened = MerkleLog(store)
    assert reopened.size == 37
    assert reopened.root() == ROOTS[37]
    reopened.extend(DATA[37:100])
    assert reopened.root() == ROOTS[100]
    assert MerkleLog(store).inclusion_proof(40, 99) == LOG.inclusion_proof(40, 99)


class FailingStore(MemoryNodeStore):
    def append(self, leaf_count: int, nodes: Sequence[Node]) -> None:
        raise OSError("disk full")


def test_a_failed_store_write_leaves_the_log_unchanged() -> None:
    log = MerkleLog(FailingStore())
    with pytest.raises(OSError):
        log.extend(DATA[:5])
    assert log.size == 0
    assert log.root() == EMPTY_ROOT


@pytest.mark.parametrize(
    ("leaf_count", "nodes"),
    [
        (2, [(0, 1, EMPTY_ROOT)]),  # a gap
        (1, [(0, 0, EMPTY_ROOT), (0, 0, EMPTY_ROOT)]),  # an overwrite
        (1, [(0, 0, EMPTY_ROOT), (2, 0, EMPTY_ROOT)]),  # a missing level
        (1, [(0, 0, b"short")]),
        (2, [(0, 0, EMPTY_ROOT)]),  # a count the nodes do not cover
    ],
)
def test_store_refuses_bad_writes_whole(leaf_count: int, nodes: list[Node]) -> None:
    store = MemoryNodeStore()
    with pytest.raises(LocalProtocolError):
        store.append(leaf_count, nodes)
    assert store.leaf_count() == 0
    MerkleLog(store).extend(DATA[:3])  # nothing half-written is left behind
