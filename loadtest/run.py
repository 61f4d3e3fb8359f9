"""Headless load runs against a local node, with pass/fail gates, and the load curve.

    python -m loadtest.run uplink|query|mixed [--users N] [--rate R] [--duration S]
    python -m loadtest.run curve [--uplink-steps 10,20,..] [--query-steps ..] [--step-s S]

Each run makes a scratch directory (deleted at the end: it holds the identity bundle's
private keys and test passwords) with a registrar, a node data directory, an identity
bundle of one gateway per user (`Registrar.issue_many`) and resident accounts that own
those gateways' meters; starts a Mosquitto on a free loopback port when one is
installed (else the node's embedded broker) and `gridledger aggregator run` on it; then
runs locust headless with `loadtest/locustfile.py`, writing `<name>_stats.csv`,
`<name>_stats_history.csv`, `<name>_failures.csv` and `<name>.html` into the result
directory, and judges the gates on `<name>_stats.csv`: every request name's error
ratio and p99 (exit status 1 when one fails).

The curve steps the offered rate up (users × GL_RATE a second each), one locust run per
step against one node per kind, until a step is saturated (throughput below
SATURATED_RATIO of the offered rate, or error ratio above the gate), and writes
`curve.csv`, `curve.png` and `machine.txt`.  The sustainable rate is the highest step
that kept up with its offered rate within the gates.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from certs.cli import bundle_device_ids, bundle_meter_ids
from certs.registrar import Registrar, read_bundle, write_bundle
from edge.portable import coap
from gridledger.files import write_private
from gridledger.machine import cpu_model
from loadtest.common import COSE_SIGN1, Gate, SyncCoap, batch_for, gates

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "loadtest" / "results"
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
MOSQUITTO = "/usr/sbin/mosquitto"
NODE_READY_S = 30.0
RESIDENT_ACCOUNTS = 4          # sign-ins are rate limited per address: a few accounts
PASSWORD = "load-test-password-0"  # test accounts in a scratch directory, deleted after
SATURATED_RATIO = 0.9
PRELOAD_BATCHES = 20
USERS = {"uplink": ["MqttGateway", "CoapGateway"], "query": ["Resident"],
         "mixed": ["MqttGateway", "CoapGateway", "Resident"]}


@dataclass
class Node:
    http: str
    mqtt: str
    coap: str
    env: dict[str, str]


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gridledger(*args: str) -> list[str]:
    return [sys.executable, "-m", "gridledger", *args]


def prepare(work: Path, gateways: int, meters: int = 1) -> dict[str, str]:
    """Registrar, node directory, identity bundle and resident accounts in `work`."""
    from aggregator.query.accounts import AccountStore

    registrar = Registrar.init(work / "ca")
    subprocess.run(gridledger("aggregator", "init", "--data-dir", str(work / "node"),
                              "--ca-dir", str(work / "ca")), check=True, capture_output=True)
    prefix = f"lt-{int(time.time()):x}-"
    ids = bundle_device_ids(prefix, gateways + RESIDENT_ACCOUNTS)
    issued = registrar.issue_many(ids, int(time.time()) - 60,
                                  lambda d: bundle_meter_ids(d, meters))
    # Gateway users take identities from the front; the residents' meters belong to the
    # last ones, whose readings `preload` puts on the ledger before the run.
    write_bundle(work / "bundle.jsonl", registrar, issued)
    write_bundle(work / "residents.jsonl", registrar, issued[gateways:])
    lines = []
    store = AccountStore(work / "node")
    try:
        for n, item in enumerate(issued[gateways:]):
            meter = item.claims.meters[0]
            store.add(f"resident{n}", "resident", PASSWORD, int(time.time()), (meter,), ())
            lines.append(f"resident{n} {PASSWORD} {meter}")
    finally:
        store.close()
    write_private(work / "residents.txt", ("\n".join(lines) + "\n").encode())
    return {"GL_BUNDLE": str(work / "bundle.jsonl"), "GL_RESIDENTS": str(work / "residents.txt"),
            "GL_GENESIS": str(work / "node" / "genesis.json")}


def preload(work: Path, coap_url: str) -> None:
    """PRELOAD_BATCHES committed batches for each resident's gateway, over CoAP, so the
    query users read real rows and receipts."""
    coap_client = SyncCoap(coap_url, random.Random(1))
    try:
        for identity in read_bundle(work / "residents.jsonl"):
            for seq in range(1, PRELOAD_BATCHES + 1):
                message = batch_for(identity, seq, int(time.time()), 1_000_000 + seq * 3600,
                                    True)  # until enrolled, every batch presents it
                answer = coap_client.request(coap.POST, "/gl/v1/up", message, COSE_SIGN1)
                if answer.code_text != "2.04":
                    raise RuntimeError(f"preload refused: {answer.payload[:64]!r}")
    finally:
        coap_client.close()


@contextlib.contextmanager
def mosquitto(work: Path) -> Iterator[str | None]:
    if not os.path.exists(MOSQUITTO):
        yield None
        return
    port = free_port()
    config = work / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                      "max_queued_messages 100000\n")
    process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def wait_for_status(http: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + NODE_READY_S
    while True:
        try:
            with urllib.request.urlopen(http + "/v1/status", timeout=1):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("node did not start:\n" + log.read_text()[-2000:]) from None
            time.sleep(0.05)


@contextlib.contextmanager
def local_node(work: Path, gateways: int) -> Iterator[Node]:
    env = prepare(work, gateways)
    with mosquitto(work) as broker:
        coap, http = free_port(), free_port()
        args = ["aggregator", "run", "--data-dir", str(work / "node"),
                "--coap", f"127.0.0.1:{coap}", "--http", f"127.0.0.1:{http}", "--no-pool"]
        if broker is not None:
            args += ["--mqtt-url", broker]
            mqtt = broker
        else:
            embedded = free_port()
            args += ["--embedded-mqtt", f"127.0.0.1:{embedded}"]
            mqtt = f"mqtt://127.0.0.1:{embedded}"
        log = work / "node.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(gridledger(*args), stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_status(f"http://127.0.0.1:{http}", process, log)
            preload(work, f"coap://127.0.0.1:{coap}")
            env |= {"GL_MQTT": mqtt, "GL_COAP": f"coap://127.0.0.1:{coap}"}
            yield Node(f"http://127.0.0.1:{http}", mqtt, f"coap://127.0.0.1:{coap}", env)
        finally:
            process.terminate()
            process.wait(30)


def locust(node: Node, classes: list[str], users: int, rate: float, duration_s: float,
           prefix: Path) -> None:
    env = {**os.environ, **node.env, "GL_RATE": str(rate), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
               "--host", node.http, "-u", str(users), "-r", str(max(users, 1)),
               "-t", f"{duration_s:g}s", "--stop-timeout", "15", "--csv", str(prefix),
               "--csv-full-history", "--html", str(prefix) + ".html", "--only-summary",
               "--exit-code-on-error", "0", "--loglevel", "WARNING", *classes]
    subprocess.run(command, env=env, check=True, cwd=ROOT)


def machine() -> str:
    model = cpu_model()
    load = os.getloadavg()
    return (f"date {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}\n"
            f"cores {os.cpu_count()}\ncpu {model}\npython {platform.python_version()}\n"
            f"os {platform.platform()}\nload average at start {load[0]:.2f} {load[1]:.2f} "
            f"{load[2]:.2f} (other work shares this machine)\n")


# -- one scenario ----------------------------------------------------------------------------


def run_scenario(name: str, users: int, rate: float, duration_s: float, out: Path,
                 gate: Gate) -> int:
    out.mkdir(parents=True, exist_ok=True)
    (out / "machine.txt").write_text(machine())
    with tempfile.TemporaryDirectory(prefix="gl-load-") as scratch, \
            local_node(Path(scratch), users) as node:
        locust(node, USERS[name], users, rate, duration_s, out / name)
    failed = gates(out / f"{name}_stats.csv", gate)
    verdict = "PASS" if not failed else "FAIL"
    lines = [f"{name}: {verdict} (error ratio <= {gate.error_ratio_max}, "
             f"p99 <= {gate.p99_ms_max:.0f} ms), {users} users at {rate:g}/s each"]
    lines += ["  " + f for f in failed]
    (out / f"{name}_verdict.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"results in {out}")
    return 0 if not failed else 1


# -- the curve --------------------------------------------------------------------------------


@dataclass
class Step:
    kind: str
    users: int
    offered_per_s: float
    throughput_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    failures: int

    @property
    def error_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 1.0


def read_step(kind: str, users: int, rate: float, duration_s: float, stats: Path) -> Step:
    with open(stats, newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
    requests, failures = int(row["Request Count"]), int(row["Failure Count"])

    def number(key: str) -> float:
        return float(row[key]) if row[key] not in ("", "N/A") else float("nan")

    return Step(kind, users, users * rate, (requests - failures) / duration_s,
                number("50%"), number("99%"), requests, failures)


def run_curve(kinds: dict[str, tuple[list[int], float]], step_s: float, out: Path,
              gate: Gate) -> int:
    out.mkdir(parents=True, exist_ok=True)
    (out / "machine.txt").write_text(machine())
    steps: list[Step] = []
    for kind, (user_steps, rate) in kinds.items():
        with tempfile.TemporaryDirectory(prefix="gl-curve-") as scratch, \
                local_node(Path(scratch), sum(user_steps)) as node:
            offset = 0
            for users in user_steps:
                node.env["GL_BUNDLE_OFFSET"] = str(offset)
                offset += users
                prefix = out / "steps" / f"{kind}-{users}"
                prefix.parent.mkdir(parents=True, exist_ok=True)
                step = _curve_step(kind, node, users, rate, step_s, prefix)
                steps.append(step)
                print(f"{kind}: {users} users offered {step.offered_per_s:.0f}/s -> "
                      f"{step.throughput_per_s:.1f}/s, p50 {step.p50_ms:.0f} ms, "
                      f"p99 {step.p99_ms:.0f} ms, errors {step.error_ratio:.3f}", flush=True)
                if saturated(step, gate):
                    break
    write_curve(steps, out, gate)
    return 0


def _curve_step(kind: str, node: Node, users: int, rate: float, step_s: float,
                prefix: Path) -> Step:
    locust(node, USERS["query" if kind == "query" else "uplink"][:1], users, rate, step_s,
           prefix)
    return read_step(kind, users, rate, step_s, Path(str(prefix) + "_stats.csv"))


def saturated(step: Step, gate: Gate) -> bool:
    return step.throughput_per_s < SATURATED_RATIO * step.offered_per_s or \
        step.error_ratio > gate.error_ratio_max


def sustainable(steps: list[Step], kind: str, gate: Gate) -> Step | None:
    good = [s for s in steps if s.kind == kind and not saturated(s, gate)
            and s.p99_ms <= gate.p99_ms_max]
    return max(good, key=lambda s: s.offered_per_s) if good else None


def write_curve(steps: list[Step], out: Path, gate: Gate) -> None:
    with open(out / "curve.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kind", "users", "offered_per_s", "throughput_per_s", "p50_ms",
                         "p99_ms", "requests", "failures", "error_ratio"])
        for s in steps:
            writer.writerow([s.kind, s.users, f"{s.offered_per_s:.1f}",
                             f"{s.throughput_per_s:.1f}", f"{s.p50_ms:.0f}",
                             f"{s.p99_ms:.0f}", s.requests, s.failures, f"{s.error_ratio:.4f}"])
    summary = {}
    for kind in sorted({s.kind for s in steps}):
        best = sustainable(steps, kind, gate)
        summary[kind] = None if best is None else {
            "offered_per_s": best.offered_per_s, "throughput_per_s": best.throughput_per_s,
            "p99_ms": best.p99_ms}
    (out / "sustainable.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("sustainable:", json.dumps(summary))
    plot(steps, out / "curve.png")


def plot(steps: list[Step], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({s.kind for s in steps})
    figure, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.5), squeeze=False)
    for axis, kind in zip(axes[0], kinds, strict=True):
        mine = [s for s in steps if s.kind == kind]
        offered = [s.offered_per_s for s in mine]
        axis.plot(offered, [s.throughput_per_s for s in mine], "o-", label="throughput")
        axis.plot(offered, offered, ":", color="grey", label="offered = served")
        axis.set_xlabel("offered rate (requests/s)")
        axis.set_ylabel("throughput (requests/s)")
        axis.set_title(f"{kind}: " + ("batch signed → commit receipt" if kind == "uplink"
                                      else "HTTP query API"))
        latency = axis.twinx()
        latency.plot(offered, [s.p50_ms for s in mine], "s--", color="tab:orange", label="p50")
        latency.plot(offered, [s.p99_ms for s in mine], "^--", color="tab:red", label="p99")
        latency.set_ylabel("latency (ms)")
        latency.set_yscale("log")
        lines = axis.get_legend_handles_labels()
        more = latency.get_legend_handles_labels()
        axis.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


# -- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=[*USERS, "curve"])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rate", type=float, default=1.0, help="requests/s per user")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument("--out", type=Path, help="result directory "
                        "(default loadtest/results/<scenario>-<UTC time>)")
    parser.add_argument("--error-ratio-max", type=float, default=0.01)
    parser.add_argument("--p99-ms-max", type=float, default=2000.0)
    parser.add_argument("--uplink-steps", default="5,20,80,160,240,320,400,480,640")
    parser.add_argument("--uplink-rate", type=float, default=1.0)
    parser.add_argument("--query-steps", default="2,8,32,64")
    parser.add_argument("--query-rate", type=float, default=5.0)
    parser.add_argument("--step-s", type=float, default=60.0,
                        help="seconds a step (default 60: as long as a gated run, so the "
                        "sustainable rate is one the gates hold)")
    args = parser.parse_args(argv)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"{args.scenario}-{stamp}"
    gate = Gate(args.error_ratio_max, args.p99_ms_max)
    if shutil.which("locust") is None and not (Path(sys.executable).parent / "locust").exists():
        print("error [load.setup]: locust is not installed: pip install -e '.[load]'",
              file=sys.stderr)
        return 2
    if args.scenario == "curve":
        kinds = {"uplink": ([int(u) for u in args.uplink_steps.split(",")], args.uplink_rate),
                 "query": ([int(u) for u in args.query_steps.split(",")], args.query_rate)}
        return run_curve(kinds, args.step_s, out, gate)
    return run_scenario(args.scenario, args.users, args.rate, args.duration, out, gate)


if __name__ == "__main__":
    sys.exit(main())
