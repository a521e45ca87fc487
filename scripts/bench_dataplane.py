"""Data-plane benchmark: the gateway against direct calls to the same backends, in one run.

    .venv/bin/python scripts/bench_dataplane.py [--requests 2000] [--seconds 10] [--concurrency 16]

Starts the local stack on free ports (real TorchServe, the TF Serving-compatible server, the
gateway as its own process), then measures:

1. latency, one request at a time, ``mlp`` on each stack: direct and through the gateway,
   interleaved request by request so that machine noise hits both alike; p50/p99 and the added
   latency (gateway minus direct);
2. throughput at the backend's saturation with ``cnn`` on each stack: a closed loop of
   ``--concurrency`` clients for ``--seconds``, direct and through the gateway, alternated;
3. the gateway's resident memory after 10,000 requests, and its time from start to ready.

Prints a Markdown table; docs/benchmarks.md keeps the command and the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))

from localstack import LocalStack, Ports, Service, _http, free_port  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


async def timed_post(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    start = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url} -> {r.status}")
    return (time.perf_counter() - start) * 1000


Direct = str | Callable[[], Awaitable[float]]


async def call_direct(session: aiohttp.ClientSession, direct: Direct, body: bytes) -> float:
    if isinstance(direct, str):
        return await timed_post(session, direct, body)
    return await direct()


def grpc_direct(target: str, model: str, version: int, x: np.ndarray) -> Callable[[], Awaitable[float]]:
    """A direct TF Serving gRPC Predict (the gateway's own lean client, no HTTP, no JSON)."""
    from gateway.backends.base import InferenceRequest, Target
    from gateway.backends.tfserving.client import TFServingBackend

    backend = TFServingBackend(target)
    request = InferenceRequest(inputs={"x": x})

    async def call() -> float:
        await backend.start()
        start = time.perf_counter()
        await backend.infer(Target(model, version, backend), request)
        return (time.perf_counter() - start) * 1000

    return call


async def latency(pairs: dict[str, tuple[Direct, str]], body: bytes, n: int) -> list[dict[str, object]]:
    """One request at a time, direct and gateway interleaved, per stack."""
    rows = []
    async with aiohttp.ClientSession() as session:
        for name, (direct, through) in pairs.items():
            for _ in range(200):  # warm up connections, JIT paths and caches
                await call_direct(session, direct, body)
                await timed_post(session, through, body)
            d, g = [], []
            for _ in range(n):
                d.append(await call_direct(session, direct, body))
                g.append(await timed_post(session, through, body))
            rows.append({
                "target": name, "direct_p50": pct(d, 50), "gateway_p50": pct(g, 50),
                "added_p50": pct(g, 50) - pct(d, 50), "direct_p99": pct(d, 99),
                "gateway_p99": pct(g, 99), "added_p99": pct(g, 99) - pct(d, 99),
            })  # fmt: skip
    return rows


async def closed_loop(url: Direct, body: bytes, concurrency: int, seconds: float) -> tuple[float, int]:
    """Requests per second of ``concurrency`` clients that each send the next request on answer."""
    done = errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                try:
                    await call_direct(session, url, body)
                    done += 1
                except Exception:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return done / elapsed, errors


async def throughput(pairs: dict[str, tuple[Direct, str]], body: bytes, c: int, s: float) -> list[dict[str, object]]:
    rows = []
    for name, (direct, through) in pairs.items():
        await closed_loop(direct, body, c, 2)  # warm up
        d1, de1 = await closed_loop(direct, body, c, s / 2)
        g1, ge1 = await closed_loop(through, body, c, s / 2)
        g2, ge2 = await closed_loop(through, body, c, s / 2)
        d2, de2 = await closed_loop(direct, body, c, s / 2)
        d, g = (d1 + d2) / 2, (g1 + g2) / 2
        rows.append({"target": name, "direct_rps": d, "gateway_rps": g, "ratio": g / d,
                     "errors": de1 + de2 + ge1 + ge2})  # fmt: skip
    return rows


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def memory_after(url: str, body: bytes, pid: int, n: int = 10_000) -> tuple[float, float]:
    before = rss_mb(pid)
    connector = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(connector=connector) as session:
        sem = asyncio.Semaphore(8)

        async def one() -> None:
            async with sem:
                await timed_post(session, url, body)

        await asyncio.gather(*(one() for _ in range(n)))
    return before, rss_mb(pid)


def answers_ready(port: int) -> Callable[[], bool]:
    """A check that the gateway listening on ``port`` reports ready."""
    return lambda: _http("GET", f"http://127.0.0.1:{port}/v2/health/ready")[0] == 200


def start_to_ready(stack: LocalStack, runs: int = 3) -> list[float]:
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


def table(rows: list[dict[str, object]]) -> str:
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        out.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(out)


async def main_async(args: argparse.Namespace, stack: LocalStack) -> None:
    gw, ts, tf = stack.gateway_url, stack.torchserve_url, stack.tfserving_rest_url
    mlp = json.dumps({"instances": [[0.1, 0.2, 0.3, 0.4]]}).encode()
    cnn = json.dumps({"instances": np.random.default_rng(0).normal(size=(1, 3, 32, 32)).round(4).tolist()}).encode()

    def via(model: str, version: int) -> str:
        return f"{gw}/v1/models/{model}/versions/{version}:predict"

    x_mlp = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    x_cnn = np.asarray(json.loads(cnn)["instances"], dtype=np.float32)
    lat = await latency({
        "mlp v1 (TorchServe REST)": (f"{ts}/predictions/mlp/1", via("mlp", 1)),
        "mlp v2 (TF Serving gRPC)": (grpc_direct(stack.tfserving_target, "mlp", 2, x_mlp), via("mlp", 2)),
        "mlp v2 (TF Serving dev REST)": (f"{tf}/v1/models/mlp/versions/2:predict", via("mlp", 2)),
    }, mlp, args.requests)  # fmt: skip
    print("\n### Latency, one request at a time (ms)\n")
    print(table(lat), flush=True)
    thr = await throughput({
        "cnn v1 (TorchServe REST)": (f"{ts}/predictions/cnn/1", via("cnn", 1)),
        "cnn v2 (TF Serving gRPC)": (grpc_direct(stack.tfserving_target, "cnn", 2, x_cnn), via("cnn", 2)),
    }, cnn, args.concurrency, args.seconds)  # fmt: skip
    print(f"\n### Throughput at saturation, {args.concurrency} concurrent clients (requests/s)\n")
    print(table(thr), flush=True)
    pid = stack.services["gateway"].proc.pid  # type: ignore[union-attr]
    before, after = await memory_after(f"{gw}/v1/models/mlp/versions/1:predict", mlp, pid)
    ready = start_to_ready(stack)
    print("\n### Gateway process\n")
    print(table([{"rss_before_mb": before, "rss_after_10k_mb": after,
                  "start_to_ready_s_median": statistics.median(ready)}]))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(f"command: {' '.join(sys.argv)}\nmachine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalStack(ROOT / "model_store", Path(tmp), Ports.free()) as stack,
    ):
        asyncio.run(main_async(args, stack))


if __name__ == "__main__":
    main()
