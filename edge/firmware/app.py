"""The ESP32 agent: the portable core (edge/portable/agent.py) with board I/O.

Every interval: read the meters over RS-485, make one signed batch (pure-Python ES256,
RFC 6979), append it to the flash queue, then send what the Sender says is due over
MQTT (umqtt.simple, QoS 1 to gl/v1/{device}/up) and/or CoAP (coapup.py), and take
receipts from gl/v1/{device}/ack or the CoAP ack resource, verified against the node
keys in config.json.  A lost link backs off with jitter; the queue keeps everything
meanwhile.  Each cycle prints one
line: seq, queue depth, sign time and heap (gc.mem_alloc) after the cycle.

Limits: queue_limit batches on flash (default 256: 256 x ~0.7 KiB fits a 512 KiB
partition with room for segment turnover); window 8 in flight; one MQTT packet read per
check, CHECKS_PER_STEP checks every 50 ms.  Times for the Sender are board.now_s()
(Unix seconds): ticks_ms wraps after 12 days, and a clock step at SNTP sync only makes
pending resends due at once.
"""

import gc
import random
import sys

import board
import config as config_mod
import fstore
import meters as meters_mod
from portable import agent, p256
from portable.errors import LocalProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CHECKS_PER_STEP = 8  # umqtt reads one packet per check_msg
KEEPALIVE_S = 60
PING_EVERY_S = 30  # umqtt does not ping by itself; the broker drops us after 1.5 x 60 s
MAX_PACKET_ID = 65535  # umqtt counts packet ids up without wrapping


class Firmware:
    def __init__(self, brd: "Any", cfg: "dict[str, Any]") -> None:
        self.board = brd
        self.cfg = cfg
        root = brd.root
        self.device_id = cfg["device_id"]
        if cfg.get("key_file"):
            key = p256.SigningKey.from_bytes(
                bytes.fromhex(config_mod.read_text(root, cfg["key_file"])))
            self.sign = key.sign
        elif hasattr(brd, "sign"):
            self.sign = brd.sign  # a secure element signs; the board adapter drives it
        else:
            raise LocalProtocolError("config.json names no key_file and this board "
                                     "adapter has no secure element (board.sign)")
        self.kcwt = config_mod.read_bytes(root, cfg["cert_file"]) if cfg.get("cert_file") else None
        self.node_keys = {k: bytes.fromhex(v) for k, v in cfg["node_keys"].items()}
        self.store = fstore.FlashStore(root)
        self.outbox = agent.Outbox(self.device_id, self.store, cfg.get("queue_limit", 256),
                                   cfg.get("queue_policy", agent.DROP_NEWEST))
        random.seed(int.from_bytes(_urandom(4), "big"))
        self.sender = agent.Sender("mqtt", self.outbox, random.random, 8,
                                   cfg.get("ack_timeout_s", 10), 300)
        self.coap = None
        if cfg.get("coap_host"):
            import coapup

            coap_sender = agent.Sender("coap", self.outbox, random.random, 8,
                                       cfg.get("ack_timeout_s", 10), 300)
            self.coap = coapup.CoapUplink(brd, cfg["coap_host"], cfg.get("coap_port", 5683),
                                          self.device_id, coap_sender, self.on_receipt,
                                          random.random)
        uart_cfg = cfg["uart"]
        modbus_uart = brd.uart(uart_cfg) if any("blocks" in m for m in cfg["meters"]) else None
        self.meters = meters_mod.Meters(brd, modbus_uart, cfg["meters"],
                                        uart_cfg.get("timeout_ms", 500))
        self.client = None  # type: Any
        self.last_io_s = 0
        self.schedule = agent.Schedule(cfg.get("interval_s", 15), brd.now_s())

    # -- MQTT ----------------------------------------------------------------------

    def connect(self, now_s: int) -> None:
        from umqtt.simple import MQTTClient  # micropython-lib: `mip install umqtt.simple`

        if not self.sender.link.ready(now_s):
            return
        client = MQTTClient("gl-" + self.device_id, self.cfg["mqtt_host"],
                            self.cfg.get("mqtt_port", 1883), keepalive=KEEPALIVE_S)
        client.set_callback(self.on_message)
        try:
            client.connect(clean_session=True)
            client.subscribe(("gl/v1/" + self.device_id + "/ack").encode(), 1)
        except (OSError, IndexError) as exc:
            self.sender.link_down(now_s)
            print("mqtt_down", repr(exc))
            return
        self.client = client
        self.sender.link_up()
        print("mqtt_up")

    def on_message(self, topic: bytes, message: bytes) -> None:
        self.on_receipt(bytes(message))

    def on_receipt(self, data: bytes) -> None:
        self.outbox.on_receipt(data, self.node_keys, p256.verify)

    def pump(self, now_s: int) -> None:
        if self.coap is not None:
            self.coap.pump(now_s, self.store.get)
        if self.cfg.get("mqtt_host"):
            self.pump_mqtt(now_s)

    def pump_mqtt(self, now_s: int) -> None:
        if self.client is None:
            self.connect(now_s)
        if self.client is None:
            return
        topic = ("gl/v1/" + self.device_id + "/up").encode()
        try:
            for seq in self.sender.due(now_s):
                message = self.store.get(seq)
                if message is None:
                    self.sender.forget(seq)
                    continue
                self.client.pid %= MAX_PACKET_ID
                self.client.publish(topic, message, qos=1)
                self.sender.sent(seq, now_s)
                self.last_io_s = now_s
            if now_s - self.last_io_s >= PING_EVERY_S:
                self.client.ping()
                self.last_io_s = now_s
            for _ in range(CHECKS_PER_STEP):
                self.client.check_msg()
        except (OSError, IndexError) as exc:  # IndexError: umqtt read b"" from a closed socket
            self.client = None
            self.sender.link_down(now_s)
            print("mqtt_down", repr(exc))

    # -- the loop -------------------------------------------------------------------

    def cycle(self) -> None:
        now_s = self.board.now_s()
        groups = self.meters.read_all(now_s)
        start = self.board.ticks_ms()
        seq = self.outbox.make(groups, now_s, self.board.clock_synced(), self.sign,
                               self.kcwt)
        sign_ms = self.board.ticks_diff(self.board.ticks_ms(), start)
        for name, fields in self.outbox.pop_events():
            print(name, fields)
        gc.collect()
        print("cycle seq", seq, "depth", self.store.depth(), "sign_ms", sign_ms,
              "heap", gc.mem_alloc(), "statuses", [g.status() for g in groups])

    def step(self) -> None:
        self.board.maintain()
        now_s = self.board.now_s()
        self.meters.service(now_s)
        if self.schedule.due(now_s):
            self.schedule.advance(now_s)
            self.cycle()
        self.pump(self.board.now_s())
        self.board.sleep_ms(50)


def _urandom(n: int) -> bytes:
    import os

    return os.urandom(n)


def run(cycles: int = 0) -> None:
    """Run forever (cycles = 0) or for a number of batches (the unix-port test)."""
    brd = board.BOARD
    firmware = Firmware(brd, config_mod.load(brd.root))
    print("booted", firmware.device_id, "last_seq", firmware.store.last_seq(),
          "depth", firmware.store.depth())
    try:
        while cycles == 0 or firmware.store.last_seq() < cycles or firmware.store.depth():
            firmware.step()
    except Exception as exc:  # a crash must not brick the gateway: log, then reset
        sys.print_exception(exc)
        brd.reset()
        raise
