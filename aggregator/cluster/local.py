"""A local cluster on loopback: N validator processes sharing one genesis.

Theory of operation
-------------------
`create(dir, n)` makes a registrar (unless one is given), N node keys and one genesis
with N validators (power 1 each, engine "tendermint"), each validator with free loopback
ports for its peer links, CoAP and HTTP, and one node directory per validator
(`aggregator.node` layout).  `start` runs each node as its own process:

    python -m gridledger aggregator run --data-dir DIR/node-i --coap ... --http ...
        (--embedded-mqtt ... | --mqtt-url URL) --no-pool [--peer-listen ...]

Each node runs its own embedded broker unless `mqtt_url` names one broker for all of
them (Mosquitto): then the nodes share its subscription `$share/gl-aggregators/...`, so
each batch published there reaches one validator, as in production.

with its output in DIR/node-i/node.log, and writes DIR/cluster.json:

    {"chain_id", "genesis_hash", "ca_dir",
     "nodes": [{"node_id", "dir", "pid", "coap", "http", "peer", "peer_listen", "mqtt",
                "mqtt_url"}]}

`peer` is the address in genesis (what the other validators dial); `peer_listen` where
the process listens, the same unless a node sits behind a proxy (`proxied`, for tests
that cut a node off).  `status` asks every node's HTTP GET /v1/status; `stop` sends
SIGTERM and, after STOP_S, SIGKILL.

Limits
------
    NODES_MAX   16    a local cluster shares one machine; genesis allows 64 validators.
    READY_S     30    a node that serves no HTTP within this is reported as failed.
    STOP_S      10    SIGTERM grace before SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aggregator import node as node_mod
from certs.registrar import PUB_FILE, Registrar, registrar_public_key
from edge import crypto
from edge.portable.errors import LocalProtocolError
from gridledger import genesis as genesis_mod

CLUSTER_FILE = "cluster.json"
NODES_MAX = 16
READY_S = 30.0
STOP_S = 10.0
LOOPBACK = "127.0.0.1"
POLL_S = 0.1
# Node processes this process started, kept so that they are reaped (and Popen does not
# warn about a child it forgot); `cluster up` itself exits and leaves them running.
_children: dict[int, subprocess.Popen[bytes]] = {}


class ClusterError(LocalProtocolError):
    code = "cluster.local"


def free_port(kind: int = socket.SOCK_STREAM, taken: set[int] | None = None) -> int:
    """A loopback port nothing is bound to now.  The kernel may hand a just-released
    port out again, so a caller choosing several ports passes `taken`: the port is none
    of those, and joins them."""
    while True:
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if taken is None:
            return port
        if port not in taken:
            taken.add(port)
            return port


def _address(port: int) -> str:
    return f"{LOOPBACK}:{port}"


def create(directory: Path, nodes: int, ca_dir: Path | None = None,
           chain_id: str = "gl-cluster", now_s: int | None = None,
           proxied: frozenset[int] = frozenset(), mqtt_url: str | None = None
           ) -> dict[str, Any]:
    """Node directories and a shared genesis for `nodes` validators; the cluster
    description (pids not yet set).  Validators in `proxied` advertise a peer port of
    their own and listen on another one, for a proxy between them and the rest."""
    if not 2 <= nodes <= NODES_MAX:
        raise ClusterError(f"a local cluster has 2..{NODES_MAX} nodes")
    if (directory / CLUSTER_FILE).exists():
        raise ClusterError(f"{directory} already holds a cluster; `cluster down` and remove it")
    directory.mkdir(parents=True, exist_ok=True)
    if ca_dir is None:
        ca_dir = directory / "ca"
        if not (ca_dir / PUB_FILE).exists():
            Registrar.init(ca_dir, "cluster-registrar")
    keys = [crypto.SigningKey.generate() for _ in range(nodes)]
    entries: list[dict[str, Any]] = []
    validators = []
    taken: set[int] = set()  # every port of the cluster differs from every other
    for index, key in enumerate(keys):
        node_id = f"node-{index}"
        peer = free_port(taken=taken)
        entry: dict[str, Any] = {"node_id": node_id, "dir": str(directory / node_id), "pid": None,
                 "coap": _address(free_port(socket.SOCK_DGRAM, taken)),
                 "http": _address(free_port(taken=taken)), "peer": _address(peer),
                 "peer_listen": _address(free_port(taken=taken) if index in proxied else peer),
                 "mqtt": None if mqtt_url else _address(free_port(taken=taken)),
                 "mqtt_url": mqtt_url}
        entries.append(entry)
        validators.append(genesis_mod.Validator(node_id, key.public_key(), 1, entry["peer"],
                                                entry["coap"], entry["http"]))
    genesis = genesis_mod.Genesis(
        chain_id, int(time.time()) if now_s is None else now_s, "cluster-registrar",
        registrar_public_key(ca_dir), tuple(validators), engine="tendermint")
    genesis_mod.from_json(genesis.to_json())  # the checks every node applies on load
    for entry, key in zip(entries, keys, strict=True):
        _node_dir(Path(entry["dir"]), entry["node_id"], key, genesis)
    cluster = {"chain_id": chain_id, "genesis_hash": genesis.hash().hex(),
               "ca_dir": str(ca_dir), "nodes": entries}
    save(directory, cluster)
    return cluster


def _node_dir(data_dir: Path, node_id: str, key: crypto.SigningKey,
              genesis: genesis_mod.Genesis) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    crypto.write_private_key(data_dir / node_mod.KEY_FILE, key)
    (data_dir / node_mod.NODE_FILE).write_text(json.dumps({"node_id": node_id}) + "\n")
    genesis.dump(data_dir / node_mod.GENESIS_FILE)
    node_mod.open_node(data_dir).close()


def save(directory: Path, cluster: dict[str, Any]) -> None:
    tmp = directory / (CLUSTER_FILE + ".tmp")
    tmp.write_text(json.dumps(cluster, indent=2) + "\n")
    os.replace(tmp, directory / CLUSTER_FILE)


def load(directory: Path) -> dict[str, Any]:
    path = directory / CLUSTER_FILE
    if not path.exists():
        raise ClusterError(f"{directory} has no {CLUSTER_FILE}; run `gridledger cluster up`")
    cluster: dict[str, Any] = json.loads(path.read_text())
    return cluster


def command(entry: dict[str, Any]) -> list[str]:
    argv = [sys.executable, "-m", "gridledger", "aggregator", "run", "--data-dir", entry["dir"],
            "--coap", entry["coap"], "--http", entry["http"], "--no-pool"]
    if entry.get("mqtt_url"):
        argv += ["--mqtt-url", entry["mqtt_url"]]
    else:
        argv += ["--embedded-mqtt", entry["mqtt"]]
    if entry["peer_listen"] != entry["peer"]:
        argv += ["--peer-listen", entry["peer_listen"]]
    return argv


def start_node(entry: dict[str, Any]) -> int:
    """Start one node process (detached from our terminal's signals); its pid."""
    log_path = Path(entry["dir"]) / "node.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command(entry), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    entry["pid"] = process.pid
    _children[process.pid] = process
    return process.pid


def start(directory: Path, cluster: dict[str, Any]) -> None:
    for entry in cluster["nodes"]:
        start_node(entry)
    save(directory, cluster)


def node_status(entry: dict[str, Any], timeout_s: float = 2.0) -> dict[str, Any] | None:
    url = f"http://{entry['http']}/v1/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            found: dict[str, Any] = json.loads(response.read())
            return found
    except (OSError, ValueError):
        return None


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)


def wait_ready(cluster: dict[str, Any], timeout_s: float = READY_S) -> None:
    for entry in cluster["nodes"]:
        wait_until(_serving(entry), timeout_s,
                   f"{entry['node_id']} to serve HTTP (see {entry['dir']}/node.log)")


def _serving(entry: dict[str, Any]) -> Callable[[], bool]:
    return lambda: node_status(entry) is not None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def stop_node(entry: dict[str, Any], kill: bool = False) -> None:
    pid = entry.get("pid")
    if not alive(pid):
        return
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + STOP_S
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid), STOP_S, f"{entry['node_id']} to exit")


def stop(cluster: dict[str, Any]) -> None:
    for entry in cluster["nodes"]:
        stop_node(entry)


def status_rows(cluster: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [
        ("node", "pid", "up", "height", "last block", "peers", "http", "coap")]
    for entry in cluster["nodes"]:
        found = node_status(entry)
        up = "yes" if found is not None else ("no" if not alive(entry.get("pid")) else "?")
        height = str(found.get("height", "?")) if found else "-"
        last = str(found.get("last_block_hash", ""))[:16] if found else "-"
        peers = found.get("peers", {}) if found else {}
        connected = str(len(peers.get("connected", []))) if isinstance(peers, dict) else "-"
        rows.append((entry["node_id"], str(entry.get("pid")), up, height, last, connected,
                     entry["http"], entry["coap"]))
    return rows
