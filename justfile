# GridLedger recipes.  Run them through ./dev (which sets up .venv first), e.g. `./dev test`.
set shell := ["bash", "-euo", "pipefail", "-c"]
export PATH := justfile_directory() + "/.venv/bin:" + env_var("PATH")

# list the recipes
default:
    @just --list

# the main job on embedded defaults (see `gridledger demo --help`)
demo *ARGS:
    gridledger demo {{ARGS}}

# lint, type-check (project and ESP32 firmware) and run every test (what CI runs)
test: lint typecheck typecheck-firmware pytest

# ruff over the whole tree
lint:
    ruff check .

# mypy; strict on the portable core (pyproject.toml)
typecheck:
    mypy

# pytest with warnings as errors; pass extra pytest arguments after the recipe name
pytest *ARGS:
    pytest -W error {{ARGS}}

# signs/s and verifies/s for every ES256 backend in one run
bench-crypto *ARGS:
    python bench/bench_crypto.py {{ARGS}}

# append rate, proof sizes and proof times of the readings log at 10^3..10^6 leaves
bench-merkle *ARGS:
    python bench/bench_merkle.py {{ARGS}}

# receipts/s and p99 on one node holding 1 M readings, idle and under half-capacity ingest;
# receipt size and verify time against log size (a few minutes: it builds the ledger)
bench-query *ARGS:
    python bench/bench_query.py {{ARGS}}

# requests/s, readings/s and CPU per reading polling 1, 32 and 256 simulated Modbus TCP meters
bench-meters *ARGS:
    python bench/bench_meters.py {{ARGS}}

# seeded consensus simulation of a cluster: `just sim 1-50 --nodes 7 --byzantine 2`
sim SEEDS *ARGS:
    python -m aggregator.consensus.sim --seeds {{SEEDS}} {{ARGS}}

# long consensus soak: many seeds, a long faulty phase before the network heals
sim-soak SEEDS="1-2000" *ARGS:
    python -m aggregator.consensus.sim --seeds {{SEEDS}} --heal-ms 60000 {{ARGS}}

# batches/s and readings/s one Pi agent signs and queues; MicroPython sign time and heap
bench-edge *ARGS:
    python bench/bench_edge.py {{ARGS}}

# mypy --strict over edge/firmware against MicroPython's ESP32 and stdlib stubs
typecheck-firmware:
    #!/usr/bin/env bash
    set -euo pipefail
    site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    stubs=$(mktemp -d)
    trap 'rm -rf "$stubs"' EXIT
    for f in "$site"/*.pyi; do ln -s "$f" "$stubs/"; done
    for d in _mpy_shed umqtt; do ln -s "$site/$d" "$stubs/$d"; done
    cd edge/firmware
    MYPYPATH="{{justfile_directory()}}/edge:$stubs" mypy --config-file mypy.ini \
        --custom-typeshed-dir "$site" --no-incremental *.py

# one node's committed readings/s (direct, CoAP) against this machine's verify rate; --runs N
bench-ingest *ARGS:
    python bench/bench_ingest.py {{ARGS}}

# committed readings/s and p50/p99 commit latency: 4 BFT validator processes against solo
bench-cluster *ARGS:
    python bench/bench_cluster.py {{ARGS}}

# a fleet of virtual gateways against nodes: `just fleet --devices 1000 --mqtt URL --ca-dir CA --genesis G`
fleet *ARGS:
    gridledger sim fleet {{ARGS}}

# simulator's own cost: batches/s and CPU a batch, and the fleet size one core drives
bench-fleet *ARGS:
    python bench/bench_fleet.py {{ARGS}}

# locust headless, gateways over MQTT and CoAP against a local node; gates on errors and p99
load-uplink *ARGS:
    python -m loadtest.run uplink {{ARGS}}

# locust headless, residents on the HTTP query API of a local node; gates on errors and p99
load-query *ARGS:
    python -m loadtest.run query {{ARGS}}

# locust headless, gateways and residents together; gates on errors and p99
load-mixed *ARGS:
    python -m loadtest.run mixed {{ARGS}}

# throughput and p50/p99 against offered rate, uplink and query, until saturation (PNG + CSV)
load-curve *ARGS:
    python -m loadtest.run curve {{ARGS}}
