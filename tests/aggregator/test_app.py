"""The application: admission, execution of each tx kind, rules on chain, proposals."""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import app as app_mod
from aggregator import rules, tx
from aggregator.app import OK, Application, Device, FinalizeRequest, leaf_bytes
from aggregator.block import Block, Header, txs_root
from aggregator.merkle import MerkleLog
from aggregator.node import profile_limits
from edge import crypto
from edge.portable import cbor
from tests.aggregator.helpers import NODE_ID, PROFILE, T0, World, run_block


def codes(result: object) -> list[str]:
    return [r.code for r in result.results]  # type: ignore[attr-defined]


# -- check_tx ----------------------------------------------------------------------------


def test_check_tx_accepts_a_batch_with_its_certificate(world: World) -> None:
    check = world.app().check_tx(world.batch_tx("gw-1", 1), T0)
    assert (check.code, check.kind, check.device_id, check.seq) == (OK, tx.BATCH, "gw-1", 1)


def test_check_tx_unknown_device_without_certificate(world: World) -> None:
    check = world.app().check_tx(world.batch_tx("gw-1", 1, kcwt=False), T0)
    assert check.code == "device.unknown" and check.device_id == "gw-1"


def test_check_tx_tampered_batch(world: World) -> None:
    message = bytearray(world.message("gw-1", 1))
    message[-10] ^= 1  # inside the signature
    check = world.app().check_tx(tx.encode(tx.BATCH, bytes(message)), T0)
    assert check.code == "cose.signature"


def test_check_tx_expired_certificate(world: World) -> None:
    check = world.app().check_tx(world.batch_tx("gw-1", 1), T0 + 400 * 86400)
    assert check.code == "cert.expired"


def test_check_tx_replay_and_duplicate_of_committed(world: World) -> None:
    app = world.app()
    run_block(app, [world.batch_tx("gw-1", 1), world.batch_tx("gw-1", 2)])
    assert app.check_tx(world.batch_tx("gw-1", 2), T0).code == rules.DUPLICATE
    assert app.check_tx(world.batch_tx("gw-1", 2, energy=7), T0).code == rules.REPLAY
    assert app.check_tx(world.batch_tx("gw-1", 1), T0).code == rules.REPLAY
    assert app.check_tx(world.batch_tx("gw-1", 3), T0).code == OK


def test_check_tx_revoked_device(world: World) -> None:
    app = world.app()
    run_block(app, [world.revoke_tx("gw-1")])
    assert app.check_tx(world.batch_tx("gw-1", 1), T0).code == "cert.revoked"


def test_check_tx_statements(world: World) -> None:
    app = world.app()
    assert app.check_tx(world.enroll_tx("gw-1"), T0).code == OK
    assert app.check_tx(world.revoke_tx("gw-1"), T0).code == OK
    forged = tx.make_revocation("gw-1", T0, "", world.registrar.public_key(), world.node.sign)
    assert app.check_tx(forged, T0).code == "tx.registrar"


# -- execution ---------------------------------------------------------------------------


def test_batch_commits_one_leaf_per_meter(world: World) -> None:
    app = world.app()
    message = world.message("gw-1", 1, meters=("M1", "M2"))
    result = run_block(app, [tx.encode(tx.BATCH, message)])
    [only] = result.results
    assert (only.code, only.first_leaf, only.leaf_count) == (OK, 0, 2)
    digest = hashlib.sha256(message).digest()
    assert result.leaves == (
        leaf_bytes("gw-1", 1, "M1", digest),
        leaf_bytes("gw-1", 1, "M2", digest),
    )
    assert cbor.decode(result.leaves[0]) == ["gw-1", 1, "M1", digest]
    log = MerkleLog()
    log.extend(result.leaves)
    assert (app.state.log_size, app.state.log_root) == (2, log.root())
    assert app.log.root() == log.root()
    assert (app.state.batches, app.state.readings) == (1, 2)


JUMP = 1 + rules.SEQ_WINDOW + 3  # seqs 2 and 3 fall out of the window


def test_first_sight_enrollment_from_kcwt(world: World) -> None:
    app = world.app()
    run_block(app, [world.batch_tx("gw-1", 1)])
    device = app.state.devices["gw-1"]
    assert device.certificate == world.cert("gw-1") and device.profiles == ()
    # The registered certificate now serves batches without a kcwt.
    assert codes(run_block(app, [world.batch_tx("gw-1", 2, kcwt=False)])) == [OK]


def test_a_committed_batch_keeps_every_registry_field_of_its_device(world: World) -> None:
    """Execution builds the next Device field by field; a field added to Device must be
    added there too (this list fails first), and none of the registry's may be lost."""
    import dataclasses

    assert [f.name for f in dataclasses.fields(Device)] == [
        "device_id", "certificate", "meters", "profiles", "revoked", "registry_time_s",
        "last_seq", "last_batch_hash", "last_height", "registers", "batches", "violations",
        "seen_mask"]
    app = world.app()
    run_block(app, [world.enroll_tx("gw-1", {"M1": PROFILE})])
    enrolled = app.state.devices["gw-1"]
    run_block(app, [world.batch_tx("gw-1", 3)], time_s=T0 + 1)
    run_block(app, [world.batch_tx("gw-1", 2)], time_s=T0 + 2)  # late: below last_seq
    after = app.state.devices["gw-1"]
    registry = ("device_id", "certificate", "meters", "profiles", "revoked", "registry_time_s")
    assert [getattr(after, f) for f in registry] == [getattr(enrolled, f) for f in registry]
    assert (after.last_seq, after.last_height, after.batches) == (3, 2, 2)
    assert after.registers and after.seen_mask != enrolled.seen_mask


def test_rule_violations_are_recorded_and_the_batch_committed(world: World) -> None:
    app = world.app()
    run_block(
        app, [world.enroll_tx("gw-1", {"M1": PROFILE}), world.batch_tx("gw-1", 1, energy=5000)]
    )
    result = run_block(
        app,
        [world.batch_tx("gw-1", JUMP, energy=10, voltage=999.0, sent_at=T0 + 3600)],
        time_s=T0 + 10,
    )
    [only] = result.results
    assert only.code == OK and only.leaf_count == 1
    assert sorted(v.code for v in only.violations) == sorted(
        [rules.GAP, rules.BACKWARDS, rules.PLAUSIBILITY, rules.SKEW, rules.SKEW]
    )
    [gap] = [v for v in only.violations if v.code == rules.GAP]
    assert gap.detail.startswith("2 batches missing")  # 2 and 3 left the window
    device = app.state.devices["gw-1"]
    assert device.last_seq == JUMP and device.batches == 2
    assert dict(device.violations)[rules.SKEW] == 2
    assert device.credit == rules.credit_score(2, dict(device.violations))
    assert result.violations == 5 and app.state.violations == 5


def test_batches_out_of_seq_order_are_all_committed(world: World) -> None:
    """Reordered in flight (CoAP, a shared MQTT subscription, several validators): a late
    seq inside the window is committed, without a gap, a replay or a register running
    backwards, and the registers stay those of the newest batch."""
    app = world.app()
    run_block(app, [world.batch_tx("gw-1", 1, energy=1000)])
    run_block(app, [world.batch_tx("gw-1", 3, energy=3000)])
    late = run_block(app, [world.batch_tx("gw-1", 2, energy=2000)])
    assert codes(late) == [OK] and late.violations == 0
    device = app.state.devices["gw-1"]
    assert (device.last_seq, device.batches, device.violations) == (3, 3, ())
    assert device.register_map()[("M1", "1-0:1.8.0")] == 3000
    assert app.state.log_size == 3
    again = run_block(app, [world.batch_tx("gw-1", 2, energy=2500)])
    assert codes(again) == [rules.REPLAY]
    assert app.check_tx(world.batch_tx("gw-1", 2, energy=2600), T0).code == rules.REPLAY


def test_replay_in_one_block_is_rejected_and_counted(world: World) -> None:
    app = world.app()
    result = run_block(app, [world.batch_tx("gw-1", 1), world.batch_tx("gw-1", 1, energy=9)])
    assert codes(result) == [OK, rules.REPLAY]
    assert app.state.devices["gw-1"].violations == ((rules.REPLAY, 1),)
    assert app.state.log_size == 1


def test_duplicate_of_last_batch_is_not_a_violation(world: World) -> None:
    app = world.app()
    run_block(app, [world.batch_tx("gw-1", 1)])
    result = run_block(app, [world.batch_tx("gw-1", 1)])
    assert codes(result) == [rules.DUPLICATE] and result.violations == 0
    assert app.state.devices["gw-1"].violations == ()


def test_rejected_batch_changes_no_device(world: World) -> None:
    app = world.app()
    run_block(app, [world.batch_tx("gw-1", 1)])
    before = app.state.devices["gw-1"]
    forged = bytearray(world.message("gw-1", 2))
    forged[-1] ^= 0xFF
    result = run_block(app, [tx.encode(tx.BATCH, bytes(forged)), b"\xff"])
    first, second = codes(result)
    assert first == "cose.signature" and second.startswith("cbor.")
    assert app.state.devices["gw-1"] == before
    assert result.violations == 2  # rejections are violation records too
    assert app.state.log_size == 1


def test_revocation_stops_a_device_for_good(world: World) -> None:
    app = world.app()
    run_block(app, [world.batch_tx("gw-1", 1), world.revoke_tx("gw-1")])
    assert codes(run_block(app, [world.batch_tx("gw-1", 2)])) == ["cert.revoked"]
    again = run_block(app, [world.enroll_tx("gw-1", time_s=T0 + 5), world.revoke_tx("gw-1")])
    assert codes(again) == ["cert.revoked", "cert.revoked"]


def test_revocation_of_an_unknown_device_blocks_first_sight(world: World) -> None:
    app = world.app()
    assert codes(run_block(app, [world.revoke_tx("gw-9"), world.batch_tx("gw-9", 1)])) == [
        OK,
        "cert.revoked",
    ]


def test_enrollment_checks(world: World) -> None:
    app = world.app()
    result = run_block(
        app,
        [
            world.enroll_tx("gw-1", {"M1": "no_such_profile"}),
            world.enroll_tx("gw-1", {"M9": PROFILE}),  # M9 is not in the certificate
            world.enroll_tx("gw-1", {"M1": PROFILE}, time_s=T0 + 10),
            world.enroll_tx("gw-1", {"M2": PROFILE}, time_s=T0 + 10),  # not newer
            world.enroll_tx("gw-2", time_s=T0 + rules.SKEW_AHEAD_S + 1),
            world.enroll_tx("gw-3", cert=world.cert("gw-3", exp=T0 - 1)),
        ],
    )
    assert codes(result) == ["tx.profile", "tx.profile", OK, "tx.stale", "tx.time", "cert.expired"]
    assert app.state.devices["gw-1"].profiles == (("M1", PROFILE),)
    assert set(app.state.devices) == {"gw-1"}


def test_re_enrollment_keeps_history(world: World) -> None:
    app = world.app()
    run_block(app, [world.batch_tx("gw-1", 1)])
    run_block(app, [world.enroll_tx("gw-1", {"M1": PROFILE}, time_s=T0 + 1)])
    device = app.state.devices["gw-1"]
    assert device.last_seq == 1 and device.profiles == (("M1", PROFILE),)


def test_device_record_round_trip(world: World) -> None:
    app = world.app()
    run_block(
        app, [world.enroll_tx("gw-1", {"M1": PROFILE}), world.batch_tx("gw-1", 3, voltage=1e6)]
    )
    device = app.state.devices["gw-1"]
    again = Device.from_obj(cbor.decode(cbor.encode(device.to_obj())))
    assert again == device and again.digest == device.digest


def test_state_is_a_value_and_execute_does_not_commit(world: World) -> None:
    app = world.app()
    before = app.state
    request = FinalizeRequest(1, T0, (world.batch_tx("gw-1", 1),), NODE_ID)
    first = app.execute(request)
    second = app.execute(request)
    assert app.state is before and app.state.height == 0 and app.nodes.leaf_count() == 0
    assert first.state_root == second.state_root and first.leaves == second.leaves


# -- proposals ---------------------------------------------------------------------------


def _proposal(app: Application, txs: list[bytes], time_s: int = T0) -> Block:
    result = app.execute(FinalizeRequest(app.state.height + 1, time_s, tuple(txs), NODE_ID))
    header = Header(
        "gl-test",
        result.request.height,
        time_s,
        bytes(32),
        txs_root(txs),
        result.state.log_root,
        result.state.log_size,
        result.state_root,
        result.violations,
        NODE_ID,
    )
    return Block(header, tuple(txs), None)


def test_process_proposal_accepts_what_it_would_have_made(world: World) -> None:
    proposer, validator = world.app(), world.app()
    txs = [world.batch_tx("gw-1", 1), world.batch_tx("gw-1", 2, energy=1)]
    block = _proposal(proposer, txs)
    assert validator.process_proposal(block, 100, 1 << 20) == OK
    result = validator.finalize_block(FinalizeRequest(1, T0, tuple(txs), NODE_ID))
    assert result.state_root == block.header.state_root


def test_process_proposal_rejects_wrong_roots_and_limits(world: World) -> None:
    app = world.app()
    txs = [world.batch_tx("gw-1", 1)]
    block = _proposal(app, txs)
    wrong_state = replace(block, header=replace(block.header, state_root=bytes(32)))
    wrong_txs = replace(block, txs=(world.batch_tx("gw-1", 2),))
    wrong_chain = replace(block, header=replace(block.header, chain_id="other"))
    wrong_height = replace(block, header=replace(block.header, height=5))
    assert app.process_proposal(wrong_state, 100, 1 << 20) == "proposal.roots"
    assert app.process_proposal(wrong_txs, 100, 1 << 20) == "proposal.txs_root"
    assert app.process_proposal(wrong_chain, 100, 1 << 20) == "proposal.chain"
    assert app.process_proposal(wrong_height, 100, 1 << 20) == "proposal.height"
    assert app.process_proposal(block, 0, 1 << 20) == "proposal.limit"


def test_prepare_proposal_respects_limits_and_drops_garbage(world: World) -> None:
    app = world.app()
    a, b, c = (world.batch_tx("gw-1", s) for s in (1, 2, 3))
    assert app.prepare_proposal([a, b"junk", a, b, c], 2, 1 << 20) == [a, b]
    assert app.prepare_proposal([a, b, c], 10, len(a) + len(b)) == [a, b]


def test_registry_is_bounded(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_mod, "DEVICES_MAX", 2)
    app = world.app()
    result = run_block(
        app,
        [
            world.batch_tx("gw-1", 1),
            world.enroll_tx("gw-2"),
            world.batch_tx("gw-3", 1),
            world.enroll_tx("gw-3"),
            world.batch_tx("gw-1", 2),
        ],
    )
    assert codes(result) == [OK, OK, "registry.full", "registry.full", OK]


def test_shipped_profiles_feed_the_plausibility_rule() -> None:
    limits = profile_limits()
    assert limits["abb_b23"]["1-0:14.7.0"] == (45.0, 65.0)
    assert all(low < high for table in limits.values() for low, high in table.values())


def test_a_remembered_verification_still_meets_the_block_time(world: World) -> None:
    app = world.app()
    raw = world.batch_tx("gw-1", 1)
    assert app.check_tx(raw, T0).code == OK  # remembered as verified at T0
    late = T0 + 366 * 86400  # the certificate expired before the block
    result = run_block(app, [raw], time_s=late)
    assert codes(result) == ["cert.expired"]


def test_a_remembered_verification_does_not_outlive_a_revocation(world: World) -> None:
    app = world.app()
    run_block(app, [world.batch_tx("gw-1", 1)])
    raw = world.batch_tx("gw-1", 2)
    assert app.check_tx(raw, T0).code == OK
    assert codes(run_block(app, [world.revoke_tx("gw-1"), raw])) == [OK, "cert.revoked"]


def test_a_remembered_verification_follows_a_new_certificate(world: World) -> None:
    app = world.app()
    raw = world.batch_tx("gw-1", 1, kcwt=False)
    other = World()
    other.device_key = lambda device_id: world.device_key("gw-9")  # type: ignore[method-assign]
    foreign_key_cert = other.cert("gw-1")  # the same id, certifying another key
    run_block(app, [world.enroll_tx("gw-1", time_s=T0)])
    assert app.check_tx(raw, T0).code == OK
    run_block(app, [world.enroll_tx("gw-1", time_s=T0 + 1, cert=foreign_key_cert)])
    assert codes(run_block(app, [raw])) == ["cose.signature"]


def test_precheck_moves_the_signatures_off_the_application(world: World) -> None:
    calls = []

    def counting(public_key: bytes, message: bytes, signature: bytes) -> bool:
        calls.append(1)
        return crypto.verify(public_key, message, signature)

    app = Application(replace(world.config, verify_fn=counting))
    message = world.message("gw-1", 1)
    prechecked = app_mod.precheck(message, world.registrar.public_key(), T0, crypto.verify)
    assert prechecked is not None
    shipped = pickle.loads(pickle.dumps(prechecked))  # as a worker process returns it
    check = app.check_tx(tx.encode(tx.BATCH, message), T0, shipped)
    assert (check.code, check.device_id, check.seq) == (OK, "gw-1", 1)
    assert codes(run_block(app, [tx.encode(tx.BATCH, message)])) == [OK]
    assert calls == []


def _fields(value: object) -> object:
    """An object graph as nested plain values: every attribute, recursively."""
    if isinstance(value, list | tuple):
        return [_fields(v) for v in value]
    if isinstance(value, dict):
        return {k: _fields(v) for k, v in value.items()}
    if hasattr(value, "__dict__"):
        return (type(value).__name__, {k: _fields(v) for k, v in vars(value).items()})
    return (type(value).__name__, value)


def test_a_shipped_precheck_keeps_every_field(world: World) -> None:
    """Prechecked pickles flat; what arrives has every attribute of what left, down to
    each record's type, for a batch of two meters with an integer and a float each."""
    message = world.message("gw-1", 7, energy=123_456, voltage=231.5, meters=("M1", "M2"))
    prechecked = app_mod.precheck(message, world.registrar.public_key(), T0, crypto.verify)
    assert prechecked is not None
    shipped = pickle.loads(pickle.dumps(prechecked, pickle.HIGHEST_PROTOCOL))
    assert _fields(shipped) == _fields(prechecked)
    assert len(shipped.verified.batch.meters) == 2


def test_precheck_of_another_message_is_ignored(world: World) -> None:
    app = world.app()
    other = app_mod.precheck(
        world.message("gw-1", 1), world.registrar.public_key(), T0, crypto.verify
    )
    forged = bytearray(world.message("gw-1", 2))
    forged[-1] ^= 1
    check = app.check_tx(tx.encode(tx.BATCH, bytes(forged)), T0, other)
    assert check.code == "cose.signature"


def test_precheck_declines_what_it_cannot_decide(world: World) -> None:
    registrar = world.registrar.public_key()
    no_kcwt = world.message("gw-1", 1, kcwt=False)
    assert app_mod.precheck(no_kcwt, registrar, T0, crypto.verify) is None
    assert app_mod.precheck(b"\x00garbage", registrar, T0, crypto.verify) is None


def test_registers_per_device_are_bounded(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_mod, "REGISTERS_MAX", 1)  # one energy register per meter
    app = world.app()
    result = run_block(
        app, [world.batch_tx("gw-1", 1, meters=("M1",)), world.batch_tx("gw-1", 2, meters=("M2",))]
    )
    assert codes(result) == [OK, "device.registers"]
    assert app.state.devices["gw-1"].last_seq == 1


_ids = st.text(alphabet="abcdefgh-0123", min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(before=st.dictionaries(_ids, st.integers(0, 9), max_size=30),
       changes=st.lists(st.dictionaries(_ids, st.integers(0, 9), max_size=10), max_size=4))
def test_device_digests_carried_forward_equal_a_fresh_sort(
        before: dict[str, int], changes: list[dict[str, int]]) -> None:
    """Block after block, the digests `updated` carries forward are those a fresh sort
    of every device gives, and so is the state root built from them."""
    devices = {d: Device(d, batches=n) for d, n in before.items()}
    digests = app_mod.DeviceDigests.of(devices)
    for change in changes:
        changed = {d: Device(d, batches=n, last_seq=n) for d, n in change.items()}
        digests = digests.updated(changed, devices)
        devices = {**devices, **changed}
        fresh = app_mod.DeviceDigests.of(devices)
        assert (digests.ids, digests.digests) == (fresh.ids, fresh.digests)
        carried = app_mod.State(devices=devices, digests=digests)
        assert carried.root() == app_mod.State(devices=devices).root()
        plain = hashlib.sha256(b"".join(devices[d].digest for d in sorted(devices))).digest()
        assert hashlib.sha256(b"".join(digests.digests)).digest() == plain
