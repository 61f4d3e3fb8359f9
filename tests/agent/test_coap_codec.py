"""The portable CoAP client codec: aiocoap reads what it writes; retransmission timing."""

from __future__ import annotations

import random

import aiocoap
import pytest

from edge.portable import coap


def test_request_decodes_in_aiocoap_and_back() -> None:
    data = coap.encode_request(coap.POST, "/gl/v1/up", 7, b"tokn", b"\xd2payload", 18)
    theirs = aiocoap.Message.decode(data)
    assert theirs.opt.uri_path == ("gl", "v1", "up") and theirs.opt.content_format == 18
    assert theirs.payload == b"\xd2payload" and theirs.mid == 7 and theirs.token == b"tokn"
    ours = coap.decode(data)
    assert [n for n, _ in ours.options] == [11, 11, 11, 12] and ours.payload == b"\xd2payload"


def test_piggybacked_and_separate_responses_end_the_exchange() -> None:
    datagram = coap.encode_request(coap.GET, "/gl/v1/ack/gw-1", 9, b"tk01")
    exchange = coap.Exchange(datagram, 0.0, random.Random(1).random)
    piggy = coap.Message(coap.ACK, 0x45, 9, b"tk01", [], b"r")
    assert exchange.receive(coap.encode(piggy)) is None and exchange.response is not None
    assert exchange.response.code_text == "2.05"
    separate = coap.Exchange(datagram, 0.0, random.Random(1).random)
    separate.receive(coap.encode(coap.Message(coap.ACK, 0, 9, b"", [], b"")))
    later = coap.Message(coap.CON, 0x45, 40, b"tk01", [], b"")
    ack = separate.receive(coap.encode(later))
    assert ack is not None and coap.decode(ack).mid == 40 and separate.done()


def test_retransmits_with_doubling_timeouts_then_gives_up(seed: int) -> None:
    datagram = coap.encode_request(coap.POST, "/gl/v1/up", 1, b"tk02", b"x", 18)
    exchange = coap.Exchange(datagram, 0.0, random.Random(seed).random)
    first_s = exchange.next_deadline()
    assert coap.ACK_TIMEOUT_S <= first_s < coap.ACK_TIMEOUT_S * coap.ACK_RANDOM_FACTOR
    resend_times = []
    now_s = 0.0
    while not exchange.done():
        now_s = exchange.next_deadline()
        if exchange.handle_timeout(now_s):
            resend_times.append(now_s)
    assert len(resend_times) == coap.MAX_RETRANSMIT
    assert isinstance(exchange.error, coap.CoapTimeoutError)
    assert now_s == pytest.approx(first_s * 31)


def test_garbage_raises_the_documented_error() -> None:
    for data in (b"", b"\x00\x01\x02\x03", b"\x49\x01\x00\x01", b"\x40\x01\x00\x01\xd0"):
        with pytest.raises(coap.CoapError):
            coap.decode(data)
