"""The agent service: meters -> signed batches -> durable queue -> uplinks -> receipts.

`Agent.start()` opens the queue, starts the meters and the uplinks; `run()` makes one
batch per interval until `shutdown()` (SIGTERM or SIGINT), which stops making batches,
gives outstanding batches `drain_s` to be confirmed, closes the uplinks, meters and the
database, and writes the last status.  Whatever is still queued is sent after the next
start: nothing is lost by stopping, and a kill -9 loses only a batch not yet appended.

Policy lives in edge/portable/agent.py; this file only moves data and keeps time.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

from edge import crypto
from edge.agent import clock
from edge.agent.config import AgentConfig
from edge.agent.logs import event
from edge.agent.meters import MeterSet
from edge.agent.mqtt import MqttUplink
from edge.agent.store import SqliteStore
from edge.portable.agent import Outbox, Schedule, Sender
from edge.portable.batch import MeterGroup
from gridledger import genesis as genesis_mod

HEALTH_FILE = "health.json"
HEALTH_EVERY_S = 1.0  # status file rewritten at most once a second


class Agent:
    def __init__(self, config: AgentConfig, log: logging.Logger) -> None:
        assert config.key is not None and config.genesis is not None  # config.check
        self.config = config
        self.log = log
        self.key = crypto.read_private_key(config.key)
        self.kcwt = config.cert.read_bytes() if config.cert else None
        self.node_keys = genesis_mod.load(config.genesis).node_keys()
        seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(8))
        self.rng = random.Random(seed)
        self.store: SqliteStore | None = None
        self.outbox: Outbox | None = None
        self.meters = MeterSet(config.meters())
        self.uplinks: list[Any] = []
        self.schedule = Schedule(config.interval_s, time.time())
        self._stop = asyncio.Event()
        self._health_at_s = 0.0
        self._statuses: dict[str, str] = {}

    async def start(self) -> None:
        c = self.config
        self.store = SqliteStore.in_dir(c.state_dir, c.device_id)
        self.outbox = Outbox(c.device_id, self.store, c.queue_limit, c.queue_policy)
        if c.mqtt:
            self.uplinks.append(MqttUplink(c.mqtt, c.device_id, self._sender("mqtt"),
                                           self.store.get, self.on_receipt, self.log))
        if c.coap:
            from edge.agent.coap import CoapUplink  # aiocoap is only needed with --coap
            self.uplinks.append(CoapUplink(c.coap, c.device_id, self._sender("coap"),
                                           self.store.get, self.on_receipt, self.log))
        self.meters.start()
        for uplink in self.uplinks:
            uplink.start()
        event(self.log, "agent_started", device=c.device_id, last_seq=self.store.last_seq(),
              queue_depth=self.store.depth(), meters=[s.meter_id for s in self.meters.specs],
              uplinks=[u.__class__.__name__ for u in self.uplinks])

    def _sender(self, name: str) -> Sender:
        assert self.outbox is not None
        c = self.config
        return Sender(name, self.outbox, self.rng.random, c.window, c.ack_timeout_s,
                      c.resend_max_s)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            wait_s = self.schedule.next_deadline() - time.time()
            if wait_s > 0:
                await self._sleep(min(wait_s, HEALTH_EVERY_S))
            if self.schedule.due(time.time()) and not self._stop.is_set():
                self.schedule.advance(time.time())
                await self.cycle()
            self.write_health()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def cycle(self) -> int | None:
        """Read every meter, queue one signed batch, wake the uplinks; the seq or None."""
        assert self.outbox is not None
        groups = await self.meters.poll()
        self._log_meter_changes(groups)
        now_s = int(time.time())
        seq = self.outbox.make(groups, now_s, clock.synced(self.config.clock), self.key.sign,
                               self.kcwt)
        self._log_events()
        for uplink in self.uplinks:
            uplink.wake()
        return seq

    def _log_meter_changes(self, groups: list[MeterGroup]) -> None:
        for group in groups:
            status = group.status()
            if self._statuses.get(group.meter_id, "ok") != status:
                level = logging.INFO if status == "ok" else logging.WARNING
                error = self.meters.last[group.meter_id].error
                event(self.log, "meter_status", level, meter=group.meter_id, status=status,
                      error=error)
            self._statuses[group.meter_id] = status

    def on_receipt(self, data: bytes) -> None:
        assert self.outbox is not None
        settled = self.outbox.on_receipt(data, self.node_keys, crypto.verify)
        if settled:
            event(self.log, "receipt", logging.DEBUG, seqs=[e.seq for e in settled])
        self._log_events()

    def _log_events(self) -> None:
        assert self.outbox is not None
        for name, fields in self.outbox.pop_events():
            event(self.log, name, logging.WARNING, **fields)

    async def shutdown(self) -> None:
        event(self.log, "agent_stopping", drain_s=self.config.drain_s)
        await self._drain()
        for uplink in self.uplinks:
            await uplink.shutdown()
            event(self.log, "uplink_closed", uplink=uplink.sender.name)
        await self.meters.shutdown()
        event(self.log, "meters_closed")
        self.write_health(force=True)
        assert self.store is not None and self.outbox is not None
        event(self.log, "agent_stopped", outbox=self.outbox.status())
        self.store.close()

    async def _drain(self) -> None:
        deadline_s = time.monotonic() + self.config.drain_s
        assert self.store is not None
        for uplink in self.uplinks:
            uplink.wake()
        while time.monotonic() < deadline_s and self.store.depth() > 0 and any(
                u.sender.connected for u in self.uplinks):
            await asyncio.sleep(0.05)

    def write_health(self, force: bool = False) -> None:
        now_s = time.time()
        if not force and now_s - self._health_at_s < HEALTH_EVERY_S:
            return
        self._health_at_s = now_s
        assert self.outbox is not None
        doc = {"t": round(now_s, 3), "pid": os.getpid(), "device_id": self.config.device_id,
               "outbox": self.outbox.status(), "meters": self.meters.health(),
               "interval_s": self.config.interval_s, "missed_intervals": self.schedule.missed,
               "uplinks": {u.sender.name: {"connected": u.sender.connected,
                                           "in_flight": len(u.sender.in_flight),
                                           "last_sent_seq": u.last_sent_seq}
                           for u in self.uplinks}}
        _write_json(self.config.state_dir / HEALTH_FILE, doc)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def _dump_tasks(log: logging.Logger) -> None:
    """SIGUSR1: log where every task is waiting (for a service that will not stop)."""
    for task in asyncio.all_tasks():
        stream = io.StringIO()
        task.print_stack(file=stream)
        event(log, "task_stack", logging.WARNING, task=task.get_name(), stack=stream.getvalue())


async def serve(config: AgentConfig, log: logging.Logger) -> int:
    agent = Agent(config, log)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.request_stop)
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks, log)
    await agent.start()
    try:
        await agent.run()
    finally:
        await agent.shutdown()
    return 0
