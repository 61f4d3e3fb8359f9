"""Published RFC 6962 / RFC 9162 known answers.

The eight leaf inputs, the node and root hashes for tree sizes 0..8 and the inclusion and
consistency proofs are the test data shared by the certificate-transparency reference
implementations (transparency-dev/merkle testonly/constants.go, testonly/reference_test.go
and proof/verify_test.go).  The corruption probes mirror the kinds that suite tries: wrong
index or size, wrong leaf or root, garbage before or after the path, a flipped bit.
"""

from __future__ import annotations

import pytest

from aggregator.merkle import (
    EMPTY_ROOT,
    ConsistencyProofError,
    InclusionProofError,
    MemoryNodeStore,
    MerkleLog,
    ProofError,
    ProofFormatError,
    ProofSizeError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

LEAVES = [
    h(""),
    h("00"),
    h("10"),
    h("2021"),
    h("3031"),
    h("40414243"),
    h("5051525354555657"),
    h("606162636465666768696a6b6c6d6e6f"),
]

# NODES[level][index]: every perfect subtree of the 8-leaf tree.
NODES = [
    [
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
        h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
        h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ],
    [
        h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ],
    [
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ],
    [
        h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
    ],
]

# ROOTS[size] for sizes 0..8.
ROOTS = [
    h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]

# (leaf_index, tree_size, inclusion path)
INCLUSION = [
    (0, 1, []),
    (0, 2, [NODES[0][1]]),
    (1, 2, [NODES[0][0]]),
    (2, 3, [NODES[1][0]]),
    (1, 5, [NODES[0][0], NODES[1][1], NODES[0][4]]),
    (0, 8, [NODES[0][1], NODES[1][1], NODES[2][1]]),
    (5, 8, [NODES[0][4], NODES[1][3], NODES[2][0]]),
]

# The same paths written out in hex, as published, so the table above cannot drift.
INCLUSION_HEX = {
    (1, 5): [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}

# (old_size, new_size, consistency proof)
CONSISTENCY = [
    (1, 1, []),
    (1, 8, [NODES[0][1], NODES[1][1], NODES[2][1]]),
    (2, 5, [NODES[1][1], NODES[0][4]]),
    (6, 8, [NODES[1][2], NODES[1][3], NODES[2][0]]),
    (6, 7, [NODES[1][2], NODES[0][6], NODES[2][0]]),
]

CONSISTENCY_HEX = {
    (6, 7): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}

SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


@pytest.fixture(scope="module")
def log() -> MerkleLog:
    merkle_log = MerkleLog()
    merkle_log.extend(LEAVES)
    return merkle_log


def test_the_empty_root_is_sha256_of_nothing() -> None:
    assert ROOTS[0] == EMPTY_ROOT
    assert MerkleLog().root() == EMPTY_ROOT


def test_leaf_hashes(log: MerkleLog) -> None:
    assert [leaf_hash(data) for data in LEAVES] == NODES[0]
    assert [log.leaf(i) for i in range(8)] == NODES[0]


@pytest.mark.parametrize("size", range(9))
def test_root_of_every_past_size(log: MerkleLog, size: int) -> None:
    assert log.root(size) == ROOTS[size]


def test_roots_while_growing() -> None:
    growing = MerkleLog()
    for size, data in enumerate(LEAVES, start=1):
        growing.append(data)
        assert growing.root() == ROOTS[size]


def test_store_holds_the_perfect_subtrees() -> None:
    store = MemoryNodeStore()
    MerkleLog(store).extend(LEAVES)
    for level, hashes in enumerate(NODES):
        assert [store.node(level, i) for i in range(len(hashes))] == hashes


def test_tables_match_the_published_hex() -> None:
    for (index, size), path in INCLUSION_HEX.items():
        assert dict(((i, n), p) for i, n, p in INCLUSION)[index, size] == [h(x) for x in path]
    for (old, new), path in CONSISTENCY_HEX.items():
        assert dict(((m, n), p) for m, n, p in CONSISTENCY)[old, new] == [h(x) for x in path]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_vectors(log: MerkleLog, index: int, size: int, path: list[bytes]) -> None:
    assert log.inclusion_proof(index, size) == path
    verify_inclusion(NODES[0][index], index, size, path, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_consistency_vectors(log: MerkleLog, old: int, new: int, path: list[bytes]) -> None:
    assert log.consistency_proof(old, new) == path
    verify_consistency(old, new, ROOTS[old], ROOTS[new], path)


def _inclusion_probes(index: int, size: int, path: list[bytes]) -> list[tuple[str, tuple]]:
    leaf, root = NODES[0][index], ROOTS[size]
    probes: list[tuple[str, tuple]] = [
        ("index - 1", (leaf, index - 1, size, path, root)),
        ("index + 1", (leaf, index + 1, size, path, root)),
        ("index ^ 2", (leaf, index ^ 2, size, path, root)),
        ("size * 2", (leaf, index, size * 2, path, root)),
        ("size // 2", (leaf, index, size // 2, path, root)),
        ("wrong leaf", (leaf_hash(b"WrongLeaf"), index, size, path, root)),
        ("short leaf", (b"WrongLeaf", index, size, path, root)),
        ("empty root", (leaf, index, size, path, EMPTY_ROOT)),
        ("random root", (leaf, index, size, path, SOME_HASH)),
        ("trailing garbage", (leaf, index, size, [*path, b""], root)),
        ("trailing root", (leaf, index, size, [*path, root], root)),
        ("preceding garbage", (leaf, index, size, [b"", *path], root)),
        ("preceding root", (leaf, index, size, [root, *path], root)),
    ]
    for i in range(len(path)):
        flipped = [*path]
        flipped[i] = bytes([path[i][0] ^ 8]) + path[i][1:]
        probes.append((f"proof[{i}] bit 3", (leaf, index, size, flipped, root)))
    if path:
        probes.append(("removed component", (leaf, index, size, path[:-1], root)))
    if len(path) > 1:
        probes.append(
            ("inserted component", (leaf, index, size, [path[0], SOME_HASH, *path[1:]], root))
        )
    return probes


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_probes_fail(index: int, size: int, path: list[bytes]) -> None:
    for name, args in _inclusion_probes(index, size, path):
        with pytest.raises(ProofError):
            verify_inclusion(*args)
            pytest.fail(f"{name} verified")


def _consistency_probes(old: int, new: int, path: list[bytes]) -> list[tuple[str, tuple]]:
    r1, r2 = ROOTS[old], ROOTS[new]
    probes: list[tuple[str, tuple]] = [
        ("old - 1", (old - 1, new, r1, r2, path)),
        ("old + 1", (old + 1, new, r1, r2, path)),
        ("old ^ 2", (old ^ 2, new, r1, r2, path)),
        ("new * 2", (old, new * 2, r1, r2, path)),
        ("new // 2", (old, new // 2, r1, r2, path)),
        ("wrong old root", (old, new, leaf_hash(b"WrongRoot"), r2, path)),
        ("wrong new root", (old, new, r1, leaf_hash(b"WrongRoot"), path)),
        ("swapped roots", (old, new, r2, r1, path)),
        ("empty proof", (old, new, r1, r2, [])),
        ("trailing garbage", (old, new, r1, r2, [*path, b""])),
        ("trailing old root", (old, new, r1, r2, [*path, r1])),
        ("trailing new root", (old, new, r1, r2, [*path, r2])),
        ("preceding garbage", (old, new, r1, r2, [b"", *path])),
        ("preceding old root", (old, new, r1, r2, [r1, *path])),
        ("preceding new root", (old, new, r1, r2, [r2, *path])),
        ("preceding proof[0]", (old, new, r1, r2, [path[0], *path])),
        ("truncated", (old, new, r1, r2, path[:-1])),
    ]
    for i in range(len(path)):
        flipped = [*path]
        flipped[i] = bytes([path[i][0] ^ 16]) + path[i][1:]
        probes.append((f"proof[{i}] bit 4", (old, new, r1, r2, flipped)))
    return probes


@pytest.mark.parametrize(("old", "new", "path"), [v for v in CONSISTENCY if v[2]])
def test_consistency_probes_fail(old: int, new: int, path: list[bytes]) -> None:
    for name, args in _consistency_probes(old, new, path):
        with pytest.raises(ProofError):
            verify_consistency(*args)
            pytest.fail(f"{name} verified")


def test_single_leaf_inclusion() -> None:
    digest = leaf_hash(b"data")
    verify_inclusion(digest, 0, 1, [], digest)
    with pytest.raises(InclusionProofError):
        verify_inclusion(digest, 0, 1, [], SOME_HASH)
    with pytest.raises(ProofFormatError):
        verify_inclusion(b"", 0, 1, [], digest)
    with pytest.raises(ProofFormatError):
        verify_inclusion(digest, 0, 1, [], b"")


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (1, 1), (2, 1)])
def test_inclusion_outside_the_tree(index: int, size: int) -> None:
    with pytest.raises(ProofSizeError):
        verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)


R1, R2 = leaf_hash(b"root 1"), leaf_hash(b"root 2")

# The trivial consistency cases.  Unlike transparency-dev, which accepts any roots when
# old_size is 0, the old root of an empty tree must be the empty-tree hash here.
TRIVIAL = [
    (0, 0, EMPTY_ROOT, EMPTY_ROOT, [], None),
    (0, 1, EMPTY_ROOT, R2, [], None),
    (1, 1, R2, R2, [], None),
    (0, 0, R1, R1, [], ConsistencyProofError),
    (0, 1, R1, R2, [], ConsistencyProofError),
    (0, 0, EMPTY_ROOT, R2, [], ConsistencyProofError),
    (1, 1, R1, R2, [], ConsistencyProofError),
    (1, 0, R1, R2, [], ProofSizeError),
    (2, 1, R1, R2, [], ProofSizeError),
    (1, 2, R1, R2, [], ConsistencyProofError),
    (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], ConsistencyProofError),
    (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], ConsistencyProofError),
    (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], ConsistencyProofError),
]


@pytest.mark.parametrize(
    ("old", "new", "r1", "r2", "path", "error"), TRIVIAL, ids=range(len(TRIVIAL))
)
def test_trivial_consistency(
    old: int, new: int, r1: bytes, r2: bytes, path: list[bytes], error: type | None
) -> None:
    if error is None:
        verify_consistency(old, new, r1, r2, path)
    else:
        with pytest.raises(error):
            verify_consistency(old, new, r1, r2, path)


def test_inclusion_error_names_the_failure() -> None:
    index, size, path = INCLUSION[-1]
    with pytest.raises(InclusionProofError, match="root differs") as caught:
        verify_inclusion(NODES[0][index], index, size, path, SOME_HASH)
    assert caught.value.code == "proof.inclusion"
