"""The portable agent core: seq, queue policy, senders, receipts (CPython and MicroPython)."""

from __future__ import annotations

import random

import pytest

from edge.portable import agent, p256, receipt
from edge.portable.batch import MeterGroup, Record, open_message
from edge.portable.errors import LocalProtocolError
from tests import mpy

DEVICE = "gw-0001"
KEY = p256.SigningKey.from_bytes(bytes(range(1, 33)))
NODE = p256.SigningKey.from_bytes(bytes(range(33, 65)))
NODE_KEYS = {"node-0": NODE.public_key()}


def groups(now_s: int) -> list[MeterGroup]:
    return [MeterGroup("sdm630-1", now_s, [Record("1-0:1.8.0", 1000 + now_s, "J")]),
            MeterGroup("sdm120-2", now_s, [Record.status("timeout")])]


def ack(seqs: list[int], status: str = "committed", device: str = DEVICE) -> bytes:
    entries = [receipt.Entry(s, status, 7 if status == "committed" else 0) for s in seqs]
    return receipt.sign("node-0", device, entries, NODE.sign)


def make(outbox: agent.Outbox, count: int, start_s: int = 1000) -> list[int | None]:
    return [outbox.make(groups(start_s + i), start_s + i, True, KEY.sign) for i in range(count)]


def test_seqs_are_consecutive_and_batches_verify() -> None:
    store = agent.MemoryStore()
    outbox = agent.Outbox(DEVICE, store, 10)
    assert make(outbox, 3) == [1, 2, 3]
    message = store.get(2)
    assert message is not None
    _, batch = open_message(message)
    assert (batch.seq, batch.device_id, batch.meters[1].status()) == (2, DEVICE, "timeout")


def test_drop_newest_spends_no_seq_and_says_so() -> None:
    outbox = agent.Outbox(DEVICE, agent.MemoryStore(), 2)
    assert make(outbox, 4) == [1, 2, None, None]
    assert outbox.counters["batches_dropped_newest"] == 2
    assert [name for name, _ in outbox.pop_events()] == ["batches_dropped_newest"] * 2
    outbox.on_receipt(ack([1]), NODE_KEYS, p256.verify)
    assert make(outbox, 1) == [3]


def test_drop_oldest_deletes_the_oldest_and_says_so() -> None:
    store = agent.MemoryStore()
    outbox = agent.Outbox(DEVICE, store, 2, agent.DROP_OLDEST)
    assert make(outbox, 4) == [1, 2, 3, 4]
    assert sorted(store.messages) == [3, 4]
    assert [e["seq"] for n, e in outbox.pop_events() if n == "batches_dropped_oldest"] == [1, 2]


def test_sender_window_resend_after_ack_timeout_and_receipt_settles() -> None:
    store = agent.MemoryStore()
    outbox = agent.Outbox(DEVICE, store, 100)
    sender = agent.Sender("mqtt", outbox, random.Random(1).random, window=2, ack_timeout_s=10)
    make(outbox, 3)
    assert sender.due(0) == []  # not connected
    sender.link_up()
    assert sender.due(0) == [1, 2]
    for seq in (1, 2):
        sender.sent(seq, 0)
    assert sender.due(1) == []
    assert 7.5 <= sender.next_deadline() <= 10
    assert sender.due(10) == [1, 2]
    settled = outbox.on_receipt(ack([1, 2]), NODE_KEYS, p256.verify)
    assert [e.seq for e in settled] == [1, 2]
    assert sender.due(10) == [3]
    assert outbox.status()["last_confirmed"] == 2 and store.depth() == 1


def test_link_up_resends_everything_in_flight() -> None:
    outbox = agent.Outbox(DEVICE, agent.MemoryStore(), 100)
    sender = agent.Sender("coap", outbox, random.Random(2).random, window=8)
    make(outbox, 2)
    sender.link_up()
    for seq in sender.due(0):
        sender.sent(seq, 0)
    sender.link_down(1)
    sender.link_up()
    assert sender.due(1) == [1, 2]


def test_bad_receipts_are_counted_and_change_nothing() -> None:
    store = agent.MemoryStore()
    outbox = agent.Outbox(DEVICE, store, 100)
    make(outbox, 2)
    stranger = p256.SigningKey.from_bytes(bytes(range(2, 34)))
    forged = receipt.sign("node-0", DEVICE, [receipt.committed(1, 1)], stranger.sign)
    for data in (b"\x00garbage", forged, ack([1], device="gw-other")):
        assert outbox.on_receipt(data, NODE_KEYS, p256.verify) == []
    assert outbox.counters["receipts_invalid"] == 3 and store.depth() == 2
    assert outbox.on_receipt(ack([2], "rejected:rule.replay"), NODE_KEYS, p256.verify)
    assert outbox.counters["rejected"] == 1 and store.oldest(10, 0) == [1]
    assert outbox.status()["last_confirmed"] == 0


def test_backoff_doubles_with_jitter_up_to_max(seed: int) -> None:
    backoff = agent.Backoff(random.Random(seed).random, 1.0, 8.0, jitter=0.5)
    waits = [backoff.failed(0.0) for _ in range(6)]
    for attempt, wait_s in enumerate(waits):
        full_s = min(8.0, 2.0 ** attempt)
        assert full_s / 2 <= wait_s <= full_s
    backoff.succeeded()
    assert backoff.ready(0.0)


def test_schedule_aligns_and_counts_missed_instants() -> None:
    schedule = agent.Schedule(15, 1000.0)
    assert schedule.next_deadline() == 1005.0
    assert not schedule.due(1004.9) and schedule.due(1005.0)
    schedule.advance(1050.0)  # 1020, 1035 and 1050 were missed while busy
    assert (schedule.next_deadline(), schedule.missed) == (1065.0, 3)
    assert not schedule.due(10.0) and schedule.next_deadline() == 15.0  # clock stepped back


def test_misuse_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        agent.Outbox("bad id", agent.MemoryStore(), 10)
    with pytest.raises(LocalProtocolError):
        agent.Outbox(DEVICE, agent.MemoryStore(), 10, "drop-everything")
    with pytest.raises(LocalProtocolError):
        agent.MemoryStore().append(0, b"", 0)


MPY_SCRIPT = """
import random
from portable import agent, p256, receipt
from portable.batch import MeterGroup, Record
random.seed(3)
key = p256.SigningKey.from_bytes(bytes(range(1, 33)))
node = p256.SigningKey.from_bytes(bytes(range(33, 65)))
store = agent.MemoryStore()
outbox = agent.Outbox("gw-0001", store, 2)
sender = agent.Sender("mqtt", outbox, random.random, window=4)
for i in range(3):
    g = [MeterGroup("sdm630-1", 1000 + i, [Record("1-0:1.8.0", 1000 + i, "J")])]
    print("made", outbox.make(g, 1000 + i, True, key.sign))
sender.link_up()
print("due", sender.due(0))
ack = receipt.sign("node-0", "gw-0001", [receipt.committed(1, 5)], node.sign)
keys = {"node-0": node.public_key()}
print("settled", [e.seq for e in outbox.on_receipt(ack, keys, p256.verify)])
print("depth", store.depth(), "dropped", outbox.counters["batches_dropped_newest"])
print("msg", store.get(2).hex())
"""


@pytest.mark.micropython
def test_core_runs_under_micropython_with_identical_bytes() -> None:
    out = mpy.run(MPY_SCRIPT).splitlines()
    assert out[:6] == ["made 1", "made 2", "made None", "due [1, 2]", "settled [1]",
                       "depth 1 dropped 1"]
    store = agent.MemoryStore()
    outbox = agent.Outbox(DEVICE, store, 2)
    for i in range(2):
        g = [MeterGroup("sdm630-1", 1000 + i, [Record("1-0:1.8.0", 1000 + i, "J")])]
        outbox.make(g, 1000 + i, True, KEY.sign)
    assert out[6] == "msg " + (store.get(2) or b"").hex()


def test_oversize_batches_are_counted_always_and_reported_sparsely() -> None:
    outbox = agent.Outbox(DEVICE, agent.MemoryStore(), 100)
    kcwt = bytes(1000)  # a certificate this big makes every batch oversize
    for i in range(9):
        outbox.make(groups(1000 + i), 1000 + i, True, KEY.sign, kcwt)
    reported = [e["count"] for n, e in outbox.pop_events() if n == "batches_oversize"]
    assert outbox.counters["batches_oversize"] == 9 and reported == [1, 2, 4, 8]


def test_certificate_travels_until_a_batch_is_committed() -> None:
    store = agent.MemoryStore()
    outbox = agent.Outbox(DEVICE, store, 10)
    certificate = b"\xa0" * 40  # opaque to the outbox: only carried or not
    first = outbox.make(groups(1000), 1000, True, KEY.sign, certificate)
    second = outbox.make(groups(1001), 1001, True, KEY.sign, certificate)
    assert first is not None and second is not None
    for seq in (first, second):
        message = store.get(seq)
        assert message is not None and open_message(message)[0].kcwt == certificate
    outbox.on_receipt(ack([first]), NODE_KEYS, p256.verify)
    third = outbox.make(groups(1002), 1002, True, KEY.sign, certificate)
    assert third is not None
    message = store.get(third)
    assert message is not None and open_message(message)[0].kcwt is None
