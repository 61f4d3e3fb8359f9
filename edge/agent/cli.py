"""`gridledger edge run` and `gridledger edge status`: the gateway service and its state."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from edge.agent import config as config_mod
from edge.agent import logs, provision
from edge.agent.service import HEALTH_FILE, serve
from edge.agent.store import read_summary
from gridledger.output import SubParsers, iso_utc, key_value_lines

RUN_EPILOG = """example:
  gridledger edge run --device-id gw-0001 --key gw.key --cert gw.cwt --genesis genesis.json \\
      --meter 'sdm630@tcp://127.0.0.1:5020?unit=1' --mqtt mqtt://127.0.0.1:1883 \\
      --interval 15 --state-dir /var/lib/gridledger
Every key of --config FILE (TOML) is also a flag; flags win.  See docs/edge-agent.md."""


def add_commands(commands: SubParsers) -> None:
    run = commands.add_parser("run", help="run the gateway agent (read, sign, queue, forward)",
                              description=config_mod.__doc__, epilog=RUN_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    config_mod.add_flags(run)
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    run.set_defaults(func=cmd_run)
    status = commands.add_parser("status", help="queue depth, seqs sent and confirmed, "
                                 "meter health of a gateway agent")
    status.add_argument("--state-dir", type=Path, default=config_mod.AgentConfig().state_dir)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(func=cmd_status)
    provision.add_commands(commands)


def cmd_run(args: argparse.Namespace) -> int:
    config = config_mod.from_args(args)
    log = logs.setup(args.log_level)
    return asyncio.run(serve(config, log))


def status_doc(state_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = {"queue": read_summary(state_dir)}
    health = state_dir / HEALTH_FILE
    if health.exists():
        doc["agent"] = json.loads(health.read_text())
    return doc


def cmd_status(args: argparse.Namespace) -> int:
    doc = status_doc(args.state_dir)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(describe(doc, time.time()))
    return 0


def describe(doc: dict[str, Any], now_s: float) -> str:
    queue, agent = doc["queue"], doc.get("agent", {})
    rows = [("device", str(queue["device_id"])),
            ("queue depth", str(queue["queue_depth"])),
            ("last seq made", str(queue["last_seq"])),
            ("last seq confirmed", str(queue["last_confirmed"]))]
    if queue["oldest_queued_at_s"] is not None:
        rows.append(("oldest queued", f"#{queue['oldest_queued_seq']} made "
                                      f"{iso_utc(queue['oldest_queued_at_s'])}"))
    if agent:
        state = "running" if _alive(agent["pid"]) else "NOT RUNNING"
        rows.append(("status written", f"{now_s - agent['t']:.0f} s ago "
                                       f"(pid {agent['pid']}, {state})"))
        for name, up in agent["uplinks"].items():
            state = "connected" if up["connected"] else "DOWN"
            rows.append((f"uplink {name}", f"{state}, last seq sent {up['last_sent_seq']}, "
                                           f"{up['in_flight']} in flight"))
        counters = agent["outbox"]["counters"]
        rows.append(("counters", ", ".join(f"{k} {v}" for k, v in counters.items() if v)))
    lines = [key_value_lines(rows)]
    for meter_id, m in agent.get("meters", {}).items():
        counts = ", ".join(f"{k} {v}" for k, v in m["counters"].items())
        flag = " OFFLINE" if m["offline"] and m["status"] != "offline" else ""
        lines.append(f"  meter {meter_id:<20} {m['profile']:<8} {m['status']}{flag}  [{counts}]")
    return "\n".join(lines)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # running as another user
    return True
