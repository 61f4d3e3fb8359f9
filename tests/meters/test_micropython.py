"""The portable codecs give the same answers under MicroPython as under CPython."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests import mpy
from tests.meters.samples import DSMR4, DSMR5, DSMR22

CORPUS = r'''
from portable import crc16, dsmr, modbus
from portable.errors import FrameError

def show(label, call):
    try:
        print(label, "ok", call())
    except FrameError as e:
        print(label, "error", e.code, type(e).__name__)

def fmt_values(t):
    v = dsmr.reading_values(t)
    return " ".join("%s=%.9g%s" % (k, v[k][0], v[k][1]) for k in sorted(v))

print("crc", crc16.crc16_modbus(b"123456789"), crc16.crc16_arc(b"123456789"))
req = modbus.encode_rtu(1, modbus.encode_read_request(4, 0, 2))
print("req", req.hex() if hasattr(req, "hex") else req)
resp = modbus.encode_rtu(1, modbus.encode_read_response(4, [0x4366, 0x8000, 1, 2]))
show("rtu", lambda: modbus.decode_rtu(resp))
show("crc-bad", lambda: modbus.decode_rtu(resp[:-1] + bytes([resp[-1] ^ 1])))
show("short", lambda: modbus.decode_rtu(resp[:3]))
show("exc", lambda: modbus.decode_read_response(4, 2, modbus.encode_exception(4, 2)))
show("regs", lambda: modbus.decode_read_response(4, 4, resp[1:-2]))
d = modbus.RtuDecoder("response")
for i in range(len(resp)):
    d.feed(resp[i:i + 1])
    f = d.next_frame()
print("bytewise", f)
d.feed(b"\x01\x03")
show("eof", d.end_of_frame)
for dt in ("int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64"):
    for wo in ("big", "little"):
        for bo in ("big", "little"):
            w = modbus.encode_value(-2.5 if dt[0] == "f" else 77, dt, wo, bo)
            print("value", dt, wo, bo, w, "%.9g" % modbus.decode_value(w, dt, wo, bo))
t = modbus.ReadTransaction(1, 4, 0, 4, 10.0, 0.5, 0.004)
for i in range(0, len(resp), 3):
    t.receive(resp[i:i + 3], 10.0 + i * 0.001)
print("txn", t.done(), t.registers, t.next_deadline())
t = modbus.ReadTransaction(1, 4, 0, 4, 10.0, 0.5, 0.004)
t.receive(resp[:5], 10.1)
t.handle_timeout(10.2)
print("txn-short", type(t.error).__name__, t.error.code)
t = modbus.ReadTransaction(1, 4, 0, 4, 10.0, 0.5, 0.004)
t.handle_timeout(10.5)
print("txn-timeout", t.error.code)
m = modbus.MbapDecoder()
m.feed(modbus.encode_mbap(7, 3, modbus.encode_read_request(3, 0x5000, 8)))
show("mbap", m.next_frame)
for name, raw in (("v5", V5), ("v4", V4), ("v22", V22)):
    show(name, lambda: fmt_values(dsmr.decode_telegram(raw)))
    show(name + "-crc", lambda: fmt_values(dsmr.decode_telegram(
        raw.replace(b"1.001", b"1.002").replace(b"581.123", b"581.124"))))
    td = dsmr.TelegramDecoder()
    got = None
    for i in range(0, len(raw), 7):
        td.feed(raw[i:i + 7])
        got = td.next_telegram() or got
    print(name, "stream", got is not None and got.header)
for bad in (b"/X\r\n\r\nzz\r\n!\r\n", b"/X\r\n\r\n1-0:1.8.1(nan*kWh)\r\n!\r\n",
            b"/X\r\n\r\n1-0:1.8.1(1*kWh)\r\n!1_2A\r\n", b"/X\r\n\r\n(1)\r\n!\r\n"):
    show("bad", lambda: fmt_values(dsmr.decode_telegram(bad)))
'''


def corpus() -> str:
    return f"V5 = {DSMR5!r}\nV4 = {DSMR4!r}\nV22 = {DSMR22!r}\n" + CORPUS


@pytest.mark.micropython
def test_corpus_identical_under_micropython_and_cpython() -> None:
    script = corpus()
    under_mpy = mpy.run(script)
    under_cpython = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(mpy.EDGE_DIR)}, timeout=60,
    ).stdout
    assert "error frame.crc" in under_cpython and "stream" in under_cpython
    assert under_mpy.splitlines() == under_cpython.splitlines()
