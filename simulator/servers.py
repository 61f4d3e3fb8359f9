"""I/O shells for the simulated meters: Modbus TCP server, Modbus RTU slave and DSMR P1
emitter on pseudo-terminals.  All protocol decisions are in protocol.py; these classes
move bytes, keep time (an injected `clock`) and own their sockets and file descriptors.

Each class has `async start()` and `async shutdown()`.  The pseudo-terminal classes put
the pty in raw mode and keep its slave side open themselves, so a reader may open and
close the device path (`path`) as often as it likes without a hang-up.

Limits: at most 64 TCP connections per server (a gateway needs one; a bench a few
hundred use separate servers), requests are answered in order per connection, and an
RTU request buffer never holds more than one 256-byte ADU (modbus.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tty
from collections.abc import Callable

from edge.portable import modbus
from edge.portable.errors import FrameError
from simulator.model import Fleet, MeterModel
from simulator.protocol import ModbusResponder, corrupt_rtu, telegram

MAX_CONNECTIONS = 64
# 3.5 character times at 9600 baud is 4 ms; a pty has no baud rate, so silence of this
# long ends a frame.
RTU_SILENCE_S = 0.02
READ_CHUNK_BYTES = 4096


class ModbusTcpSimulator:
    """Modbus TCP server answering for every unit of `fleet`."""

    def __init__(self, fleet: Fleet, host: str = "127.0.0.1", port: int = 0,
                 clock: Callable[[], float] = time.time) -> None:
        self.responder = ModbusResponder(fleet)
        self.host = host
        self.port = port
        self.clock = clock
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            # Closing the connections ends each conversation normally; cancelling the
            # tasks instead makes asyncio's stream callbacks log spurious errors.
            for writer in list(self._writers):
                writer.close()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._tasks) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._conversation(reader, writer)
        except (FrameError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _conversation(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        decoder = modbus.MbapDecoder()
        replies: set[asyncio.Task[None]] = set()
        try:
            while True:
                data = await reader.read(READ_CHUNK_BYTES)
                if not data:
                    return
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    # Each request in its own task: a slow unit does not hold up the
                    # others, as on a TCP meter or a gateway with per-unit queues.
                    task = asyncio.create_task(self._reply(writer, *frame))
                    replies.add(task)
                    task.add_done_callback(replies.discard)
        finally:
            for task in list(replies):
                task.cancel()

    async def _reply(self, writer: asyncio.StreamWriter, tid: int, unit: int,
                     pdu: bytes) -> None:
        answer = self.responder.answer(unit, pdu, self.clock())
        if answer.pdu is None:
            return
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        body = answer.pdu
        if answer.corrupt:  # MBAP has no CRC: garble the byte count instead
            body = body[:1] + bytes([(body[1] + 2) & 0xFF]) + body[2:] if len(body) > 2 else body
        if not writer.is_closing():
            writer.write(modbus.encode_mbap(tid, unit, body))


class _Pty:
    """A raw pseudo-terminal: we hold the master; `path` is the device to open."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)

    def write(self, data: bytes) -> bool:
        """Write what fits; False if the line dropped bytes (nobody reading)."""
        try:
            return os.write(self.master, data) == len(data)
        except (BlockingIOError, OSError):
            return False

    def close(self) -> None:
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class ModbusRtuPtySimulator:
    """Modbus RTU slaves for every unit of `fleet` on one pseudo-terminal (one bus)."""

    def __init__(self, fleet: Fleet, clock: Callable[[], float] = time.time) -> None:
        self.responder = ModbusResponder(fleet)
        self.clock = clock
        self.pty = _Pty()
        self.path = self.pty.path
        self.frame_errors = 0
        self._decoder = modbus.RtuDecoder("request")
        self._silence: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.pty.master, self._readable)

    async def shutdown(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.pty.master)
        if self._silence is not None:
            self._silence.cancel()
        self.pty.close()

    def _readable(self) -> None:
        try:
            data = os.read(self.pty.master, READ_CHUNK_BYTES)
        except (BlockingIOError, OSError):
            return
        self._decoder.feed(data)
        self._drain()
        if self._silence is not None:
            self._silence.cancel()
        assert self._loop is not None
        self._silence = self._loop.call_later(RTU_SILENCE_S, self._end_of_frame)

    def _drain(self) -> None:
        while True:
            try:
                frame = self._decoder.next_frame()
            except FrameError:
                self.frame_errors += 1
                continue
            if frame is None:
                return
            self._handle(*frame)

    def _end_of_frame(self) -> None:
        try:
            self._decoder.end_of_frame()
        except FrameError:
            self.frame_errors += 1

    def _handle(self, unit: int, pdu: bytes) -> None:
        answer = self.responder.answer(unit, pdu, self.clock())
        if answer.pdu is None:
            return
        frame = modbus.encode_rtu(unit, answer.pdu)
        if answer.corrupt:
            frame = corrupt_rtu(frame)
        assert self._loop is not None
        self._loop.call_later(answer.delay_s, self.pty.write, frame)


class P1PtyEmitter:
    """A DSMR meter's P1 port: pushes a telegram every `interval_s` on a pty."""

    def __init__(self, meter: MeterModel, interval_s: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.meter = meter
        self.interval_s = meter.profile.dsmr_interval_s if interval_s is None else interval_s
        self.clock = clock
        self.pty = _Pty()
        self.path = self.pty.path
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.pty.close()

    async def _run(self) -> None:
        while True:
            self.emit_once()
            await asyncio.sleep(self.interval_s)

    def emit_once(self) -> None:
        faults = self.meter.faults
        if faults.has("silent"):
            return
        raw = telegram(self.meter, self.clock())
        if faults.has("slow"):
            asyncio.get_running_loop().call_later(faults.delay_s, self.pty.write, raw)
        elif self.pty.write(raw):
            self.sent += 1
