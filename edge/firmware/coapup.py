"""CoAP uplink on the board: confirmable POST /gl/v1/up (Content-Format 18), receipts by
GET /gl/v1/ack/{device}, through the portable client codec (portable/coap.py).

Requests are made one at a time and block the loop for at most one exchange (about
45 s when nobody answers: RFC 7252's retransmission schedule).  A timeout, a reset or a
5.xx marks the link down; the Sender's jittered backoff says when to try again.  A batch
over 1 KiB is not sent this way (no block-wise transfer here) and is counted by the
agent core as oversize; keep meters per gateway within that.
"""

import select
import socket

from portable import coap
from portable.errors import GridLedgerError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

COSE_SIGN1 = 18
CONTENT = 0x45  # 2.05


class CoapUplink:
    def __init__(self, brd: "Any", host: str, port: int, device_id: str, sender: "Any",
                 on_receipt: "Any", rand: "Any") -> None:
        self.board = brd
        self.addr = socket.getaddrinfo(host, port)[0][-1]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.poll = select.poll()
        self.poll.register(self.sock, select.POLLIN)
        self.device_id = device_id
        self.sender = sender
        self.on_receipt = on_receipt
        self.rand = rand
        self.mid = int(rand() * 65536)
        self.token = int(rand() * 0xFFFFFFFF)

    def request(self, code: int, path: str, payload: bytes = b"",
                content_format: int = -1) -> "coap.Message":
        self.mid = (self.mid + 1) & 0xFFFF
        self.token = (self.token + 1) & 0xFFFFFFFF
        datagram = coap.encode_request(code, path, self.mid, self.token.to_bytes(4, "big"),
                                       payload, content_format)
        start = self.board.ticks_ms()
        exchange = coap.Exchange(datagram, 0.0, self.rand)
        self.sock.sendto(datagram, self.addr)
        while not exchange.done():
            now_s = self.board.ticks_diff(self.board.ticks_ms(), start) / 1000
            wait_ms = max(0, int((exchange.next_deadline() - now_s) * 1000))
            if self.poll.poll(min(wait_ms, 200)):
                reply = exchange.receive(self.sock.recv(coap.MAX_MESSAGE_BYTES))
                if reply is not None:
                    self.sock.sendto(reply, self.addr)
            elif exchange.handle_timeout(now_s):
                self.sock.sendto(datagram, self.addr)
        if exchange.error is not None:
            raise exchange.error
        assert exchange.response is not None
        if exchange.response.code >> 5 == 5:
            raise coap.CoapError("server error " + exchange.response.code_text)
        return exchange.response

    def pump(self, now_s: int, get_message: "Any") -> None:
        if not self.sender.connected:
            if not self.sender.link.ready(now_s):
                return
            self.sender.link_up()
        try:
            sent = 0
            for seq in self.sender.due(now_s):
                message = get_message(seq)
                if message is None:
                    self.sender.forget(seq)
                    continue
                answer = self.request(coap.POST, "/gl/v1/up", message, COSE_SIGN1)
                if answer.code >> 5 != 2:
                    print("coap_refused", seq, answer.code_text, answer.payload[:60])
                self.sender.sent(seq, now_s)
                sent += 1
            if self.sender.in_flight:
                answer = self.request(coap.GET, "/gl/v1/ack/" + self.device_id)
                if answer.code == CONTENT and answer.payload:
                    self.on_receipt(answer.payload)
        except (GridLedgerError, OSError) as exc:
            self.sender.link_down(now_s)
            print("coap_down", repr(exc))
