"""The gateway core without I/O: schedule, faults and settlement, stepped by hand with
receipts signed by a test node key."""

from __future__ import annotations

import random

from certs.registrar import Identity, Registrar
from edge import crypto
from edge.portable import batch as batch_mod
from edge.portable import receipt as receipt_mod
from edge.portable.verify import verify_message
from simulator.fleet import faults, loadshape
from simulator.fleet.gateway import GENUINE, GatewayCore, Meter, Send, Timing
from simulator.fleet.reconcile import DeviceLog, reconcile

from .conftest import NODE_ID, NODE_KEY, NOW_S, node_keys

INTERVAL_S = 10.0


def core_for(identity: Identity, seed: int, fault: faults.DeviceFault | None = None,
             clone: bool = False, log: DeviceLog | None = None) -> GatewayCore:
    timing = Timing(NOW_S, INTERVAL_S, 1.0, NOW_S)
    meters: list[Meter] = [loadshape.MeterSim(m, "household", random.Random(seed), NOW_S)
                           for m in identity.meters]
    return GatewayCore(identity, meters, timing, log or DeviceLog(), random.Random(seed),
                       fault, node_keys(), clone=clone)


def commit(core: GatewayCore, sends: list[Send], height: int, now_s: float) -> list[float]:
    """What the node would answer: every genuine send committed at `height`."""
    entries = [receipt_mod.committed(s.seq, height) for s in sends if s.kind == GENUINE]
    if not entries:
        return []
    data = receipt_mod.sign(NODE_ID, core.device_id, entries, NODE_KEY.sign)
    for entry in entries:
        core.log.seq(entry.seq).heights.add(entry.height)
    return core.settle(data, entries, now_s)


def run(core: GatewayCore, until_s: float, height: int = 1) -> tuple[list[Send], int]:
    """Step the core like the shell does, committing everything at once."""
    sent: list[Send] = []
    now_s = NOW_S
    while now_s < until_s:
        now_s = max(now_s, min(core.next_deadline(), until_s))
        sends = core.handle_timeout(now_s)
        sent.extend(sends)
        if commit(core, sends, height, now_s):
            height += 1
        now_s += 0.001
    return sent, height


def test_one_batch_an_interval_signed_in_seq_order_with_the_certificate_first(
        identities: list[Identity], registrar: Registrar, seed: int) -> None:
    core = core_for(identities[0], seed)
    sent, _ = run(core, NOW_S + 5 * INTERVAL_S)
    assert [s.seq for s in sent] == [1, 2, 3, 4, 5]
    first = verify_message(sent[0].message, registrar.public_key, int(NOW_S), crypto.verify)
    assert [g.meter_id for g in first.batch.meters] == list(identities[0].meters)
    assert batch_mod.open_message(sent[1].message)[0].kcwt is None  # enrolled by then
    assert reconcile({core.device_id: core.log}).clean
    assert core.idle()


def test_offline_queues_then_drains_in_order(identities: list[Identity], seed: int) -> None:
    fault = faults.DeviceFault(faults.OFFLINE, 2.5 * INTERVAL_S, 3 * INTERVAL_S)
    core = core_for(identities[1], seed, fault)
    sent, _ = run(core, NOW_S + 8 * INTERVAL_S)
    times = [s.seq for s in sent]
    assert times == sorted(times) and len(set(times)) == len(times) == 8
    assert reconcile({core.device_id: core.log}).clean


def test_tampered_copy_goes_first_and_does_not_verify(
        identities: list[Identity], seed: int) -> None:
    fault = faults.DeviceFault(faults.TAMPER, 2.5 * INTERVAL_S, 0.0)
    core = core_for(identities[2], seed, fault)
    sent, _ = run(core, NOW_S + 5 * INTERVAL_S)
    index = next(i for i, s in enumerate(sent) if s.kind == faults.TAMPER)
    forged, genuine = sent[index], sent[index + 1]
    assert genuine.kind == GENUINE and genuine.seq == forged.seq
    assert forged.message != genuine.message
    key = identities[2].key.public_key()
    message = batch_mod.open_message(forged.message)[0]
    assert not crypto.verify(key, message.to_be_signed(), message.signature)
    assert reconcile({core.device_id: core.log}).clean


def test_rollback_signs_a_used_seq_and_needs_a_rule_replay_to_reconcile(
        identities: list[Identity], seed: int) -> None:
    fault = faults.DeviceFault(faults.ROLLBACK, 2.5 * INTERVAL_S, 0.0)
    core = core_for(identities[3], seed, fault)
    sent, _ = run(core, NOW_S + 4 * INTERVAL_S)
    probe = next(s for s in sent if s.kind == faults.ROLLBACK)
    assert probe.seq <= core.outbox.store.last_confirmed()
    assert not core.idle()  # waits for the node's verdict
    report = reconcile({core.device_id: core.log})
    assert not report.clean and "rule.replay" in report.problems[0]
    retry_s = probe_time(core) + 0.001
    later = core.handle_timeout(retry_s)  # no verdict yet: it goes again
    assert [s.message for s in later if s.kind == faults.ROLLBACK] == [probe.message]
    commit(core, later, 99, retry_s)
    data = receipt_mod.sign(NODE_ID, core.device_id, [receipt_mod.rejected(probe.seq,
                            "rule.replay")], NODE_KEY.sign)
    entries = receipt_mod.verify(data, node_keys(), crypto.verify)[2]
    core.log.seq(probe.seq).rejected["rule.replay"] += 1
    core.settle(data, entries, NOW_S + 50)
    assert core.idle()
    assert reconcile({core.device_id: core.log}).clean


def probe_time(core: GatewayCore) -> float:
    return min(due_s for _, due_s, _ in core.probe_retries.values())


def test_replay_resends_the_first_batch_byte_for_byte(
        identities: list[Identity], seed: int) -> None:
    fault = faults.DeviceFault(faults.REPLAY, 3.5 * INTERVAL_S, 0.0)
    core = core_for(identities[4], seed, fault)
    sent, _ = run(core, NOW_S + 5 * INTERVAL_S)
    probe = next(s for s in sent if s.kind == faults.REPLAY)
    assert probe.message == sent[0].message and probe.seq == 1


def test_a_clone_signs_only_probes_and_a_second_commit_is_caught(
        identities: list[Identity], seed: int) -> None:
    log = DeviceLog()
    original = core_for(identities[5], seed, log=log)
    clone = core_for(identities[5], seed + 1, faults.DeviceFault(faults.CLONE, 20.0, 0.0),
                     clone=True, log=log)
    run(original, NOW_S + 5 * INTERVAL_S)
    now_s = clone.next_deadline()
    assert now_s >= NOW_S + 20.0
    sends = clone.handle_timeout(now_s)
    assert [s.kind for s in sends] == [faults.CLONE] and sends[0].seq == 1
    log.seq(1).heights.add(99)  # had the ledger committed the clone's batch too
    report = reconcile({identities[5].device_id: log})
    assert any("2 heights" in p for p in report.problems)


def test_commit_latency_is_measured_from_signing(identities: list[Identity],
                                                 seed: int) -> None:
    core = core_for(identities[6], seed)
    now_s = core.next_deadline()
    sends = core.handle_timeout(now_s)
    latencies = commit(core, sends, 1, now_s + 0.25)
    assert latencies == [0.25]


def test_burst_gateways_send_an_extra_batch_at_the_top_of_the_model_hour(
        identities: list[Identity], seed: int) -> None:
    hour_s = 3600.0 * 500_000
    timing = Timing(NOW_S, INTERVAL_S, 60.0, hour_s - 90.0)  # the hour 1.5 s in (wall)
    meters: list[Meter] = [loadshape.MeterSim(m, "household", random.Random(seed), hour_s)
                           for m in identities[7].meters]
    core = GatewayCore(identities[7], meters, timing, DeviceLog(), random.Random(seed), None,
                       node_keys(), burst=True)
    assert core.next_deadline() <= NOW_S + 1.5
    assert core.next_burst_s == timing.wall_s(hour_s)
    core.handle_timeout(timing.wall_s(hour_s))
    assert core.outbox.store.last_seq() >= 1
    assert core.next_burst_s == timing.wall_s(hour_s + 3600.0)
