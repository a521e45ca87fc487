"""Load test: hold the gateway at its measured capacity, then check errors, latency and memory.

    make loadtest
    PYTHONPATH=.:deploy .venv/bin/python scripts/load_test.py [--seconds 60] [--fraction 0.9] [--concurrency 16]
        [--capacity-seconds 10] [--max-outstanding 64] [--warmup 10] [--max-slope 5] [--max-missed 0.01]

Starts the local stack on free ports as scripts/bench_dataplane.py does (real TorchServe, the TF
Serving-compatible server, the gateway as its own process) and sends ``mlp`` through the gateway,
version 1 (TorchServe REST) and version 2 (TF Serving gRPC) alternated, each with its version's
``sample_input.json``:

1. capacity: a closed loop of ``--concurrency`` clients for ``--capacity-seconds`` (after 2 s of
   warm-up); the capacity is the requests/s it achieves;
2. hold: an open loop at ``--fraction`` of the capacity for ``--seconds``. Requests start on a fixed
   schedule whether or not the earlier ones have answered, and latency counts from the scheduled
   start, so a slow gateway cannot hide its tail. A tick that finds ``--max-outstanding`` requests
   (default 4x the concurrency) still open is counted missed, not queued. Every second: the
   gateway's resident memory and the CPU time of each service.

Prints Markdown tables (docs/benchmarks.md keeps the command and the results). Exits 1 if any
request failed, if more than ``--max-missed`` of the ticks were missed (the load was not held), or
if the gateway's memory grew faster than ``--max-slope`` MB/minute (least squares over the hold
after its first ``--warmup`` seconds). This script only starts the stack (deploy/localstack.py,
hence ``deploy`` on ``PYTHONPATH``); the load and the gate are ``loadgen.loadtest``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from localstack import LocalStack, Ports

from loadgen import loadtest

ROOT = Path(__file__).resolve().parents[1]


def mlp_mix(gateway_url: str) -> list[loadtest.Target]:
    """``mlp`` v1 (TorchServe) and v2 (TF Serving gRPC) through the gateway, each with its sample input."""
    return [
        loadtest.Target(f"{gateway_url}/v1/models/mlp/versions/{v}:predict",
                        (ROOT / "model_store" / "mlp" / str(v) / "sample_input.json").read_bytes())
        for v in (1, 2)
    ]  # fmt: skip


def process_groups(stack: LocalStack) -> dict[str, int]:
    """Each service's process group (its leader's pid): TorchServe's Java frontend and workers share one."""
    return {name: service.proc.pid for name, service in stack.services.items() if service.proc is not None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60, help="length of the hold")
    parser.add_argument("--fraction", type=float, default=0.9, help="hold rate, as a fraction of capacity")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop clients measuring capacity")
    parser.add_argument("--capacity-seconds", type=float, default=10.0)
    parser.add_argument("--max-outstanding", type=int, default=None, help="default: 4x --concurrency")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of the hold left out of the slope")
    parser.add_argument("--max-slope", type=float, default=5.0, help="largest RSS growth allowed, MB/minute")
    parser.add_argument("--max-missed", type=float, default=0.01, help="largest share of ticks allowed to be missed")
    args = parser.parse_args()
    limits = loadtest.Limits(**vars(args))
    print(f"command: {' '.join(sys.argv)}\nmachine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalStack(ROOT / "model_store", Path(tmp), Ports.free()) as stack,
    ):
        return asyncio.run(loadtest.run(mlp_mix(stack.gateway_url), process_groups(stack), limits))


if __name__ == "__main__":
    sys.exit(main())
