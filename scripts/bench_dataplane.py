"""Data-plane benchmark: the gateway against direct calls to the same backends, in one run.

    make bench
    PYTHONPATH=.:deploy .venv/bin/python scripts/bench_dataplane.py [--requests 2000] [--seconds 10] [--concurrency 16]
        [--only-oip]

Starts the local stack on free ports (real TorchServe, the TF Serving-compatible server, the
gateway as its own process) and runs ``loadgen.bench`` against it: latency one request at a time
(direct and through the gateway, interleaved), throughput at the backend's saturation (closed loop),
the gateway's memory after 10,000 requests and its time from start to ready.

Prints a Markdown table; docs/benchmarks.md keeps the command and the results. This script only
starts the stack (deploy/localstack.py, hence ``deploy`` on ``PYTHONPATH``); the measuring is in loadgen.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from localstack import LocalStack, Ports, Service, _http, free_port

from loadgen import bench

ROOT = Path(__file__).resolve().parents[1]


def answers_ready(port: int) -> Callable[[], bool]:
    """A check that the gateway listening on ``port`` reports ready."""
    return lambda: _http("GET", f"http://127.0.0.1:{port}/v2/health/ready")[0] == 200


def start_to_ready(stack: LocalStack, runs: int = 3) -> list[float]:
    """Seconds from starting a second gateway (same settings, its own port) to its ready answer."""
    times = []
    for _ in range(runs):
        port = free_port()
        env = {**stack.gateway_environment(), "GATEWAY_PORT": str(port)}
        with tempfile.TemporaryDirectory() as tmp:
            svc = Service("gateway-start", [sys.executable, "-m", "gateway.cli", "serve"],
                          Path(tmp) / "log", env=env)  # fmt: skip
            start = time.perf_counter()
            svc.start()
            svc.wait_until(answers_ready(port), 30, "ready")
            times.append(time.perf_counter() - start)
            svc.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--only-oip", action="store_true", help="only cnn through OIP, JSON against binary")
    args = parser.parse_args()
    print(f"command: {' '.join(sys.argv)}\nmachine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalStack(ROOT / "model_store", Path(tmp), Ports.free()) as stack,
    ):
        gateway = stack.services["gateway"].proc
        assert gateway is not None, "the local stack started no gateway process"
        target = bench.Stack(
            gateway_url=stack.gateway_url,
            torchserve_url=stack.torchserve_url,
            tfserving_rest_url=stack.tfserving_rest_url,
            tfserving_target=stack.tfserving_target,
            gateway_pid=gateway.pid,
            start_to_ready=lambda: start_to_ready(stack),
        )
        asyncio.run(bench.run(target, args.requests, args.seconds, args.concurrency, only_oip=args.only_oip))


if __name__ == "__main__":
    main()
