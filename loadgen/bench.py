"""The data-plane benchmark's measurements: the gateway against direct calls to the same backends.

1. latency, one request at a time, ``mlp`` on each stack: direct and through the gateway,
   interleaved request by request so that machine noise hits both alike; p50/p99 and the added
   latency (gateway minus direct);
2. throughput at the backend's saturation with ``cnn`` on each stack: a closed loop of
   ``concurrency`` clients for ``seconds``, direct and through the gateway, alternated;
3. the gateway's resident memory after 10,000 requests, and its time from start to ready;
4. ``cnn`` through the Open Inference Protocol as JSON and as binary tensor data (the Triton
   client's default form), one request at a time on each stack: latency against the direct call,
   and the gateway process's CPU per request (``oip_forms``; alone with ``only_oip``).

The stack itself (ports, processes) is the caller's: ``scripts/bench_dataplane.py`` starts the local
stack and hands its addresses over as ``Stack``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np

from loadgen.report import markdown, pct
from loadgen.schedule import closed_loop
from loadgen.scrape import CLOCK_TICKS, rss_mb
from loadgen.send import Direct, call_direct, timed_post


@dataclass(frozen=True)
class Stack:
    """Where the stack under test answers, and how to time a fresh gateway from start to ready."""

    gateway_url: str
    torchserve_url: str
    tfserving_rest_url: str
    tfserving_target: str  # host:port of TF Serving's gRPC API
    gateway_pid: int
    start_to_ready: Callable[[], list[float]]


def grpc_direct(target: str, model: str, version: int, x: np.ndarray) -> Callable[[], Awaitable[float]]:
    """A direct TF Serving gRPC Predict (the gateway's own lean client, no HTTP, no JSON)."""
    from gateway.backends.tfserving.client import TFServingBackend
    from gateway.core.types import InferenceRequest, Target

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
    rows: list[dict[str, object]] = []
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


async def throughput(pairs: dict[str, tuple[Direct, str]], body: bytes, c: int, s: float) -> list[dict[str, object]]:
    """Closed-loop requests/s, direct and through the gateway, in the order direct, gateway, gateway, direct."""
    rows: list[dict[str, object]] = []
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


async def memory_after(url: str, body: bytes, pid: int, n: int = 10_000) -> tuple[float, float]:
    """The process's RSS (MB) before and after ``n`` requests, 8 at a time."""
    before = rss_mb(pid)
    connector = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(connector=connector) as session:
        sem = asyncio.Semaphore(8)

        async def one() -> None:
            async with sem:
                await timed_post(session, url, body)

        await asyncio.gather(*(one() for _ in range(n)))
    return before, rss_mb(pid)


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def oip_bodies(x: np.ndarray) -> dict[str, tuple[bytes, dict[str, str]]]:
    """An OIP infer request of ``x`` as JSON, and in the binary tensor data form (binary answer)."""
    tensor = {"name": "x", "datatype": "FP32", "shape": list(x.shape)}
    as_json = json.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]}).encode()
    raw = x.astype("<f4").tobytes()
    header = json.dumps({
        "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }).encode()  # fmt: skip
    binary = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return {"JSON": (as_json, {"Content-Type": "application/json"}), "binary": (header + raw, binary)}


async def oip_forms(stack: Stack, x: np.ndarray, n: int, block: int = 25) -> list[dict[str, object]]:
    """``cnn`` one request at a time per stack: direct, OIP JSON and OIP binary through the gateway,
    in alternating blocks of ``block``; p50 latencies, and the gateway's CPU ms per request by form."""
    gw, ts = stack.gateway_url, stack.torchserve_url
    rest = json.dumps({"instances": x.tolist()}).encode()
    bodies = oip_bodies(x)
    rows: list[dict[str, object]] = []
    async with aiohttp.ClientSession() as session:
        for name, version, direct in (
            ("cnn v1 (TorchServe)", 1, f"{ts}/predictions/cnn/1"),
            ("cnn v2 (TF Serving gRPC)", 2, grpc_direct(stack.tfserving_target, "cnn", 2, x)),
        ):
            url = f"{gw}/v2/models/cnn/versions/{version}/infer"
            for _ in range(50):  # warm up
                await call_direct(session, direct, rest)
                for body, headers in bodies.values():
                    await timed_post(session, url, body, headers)
            ms: dict[str, list[float]] = {"direct": [], "JSON": [], "binary": []}
            cpu = dict.fromkeys(bodies, 0.0)
            for _ in range(max(n // block, 1)):
                for _ in range(block):
                    ms["direct"].append(await call_direct(session, direct, rest))
                for form, (body, headers) in bodies.items():
                    before = process_cpu_seconds(stack.gateway_pid)
                    for _ in range(block):
                        ms[form].append(await timed_post(session, url, body, headers))
                    cpu[form] += process_cpu_seconds(stack.gateway_pid) - before
            d = pct(ms["direct"], 50)
            rows.append({
                "target": name, "direct_p50": d, "json_p50": pct(ms["JSON"], 50),
                "binary_p50": pct(ms["binary"], 50), "added_json_p50": pct(ms["JSON"], 50) - d,
                "added_binary_p50": pct(ms["binary"], 50) - d,
                "gateway_cpu_ms_json": cpu["JSON"] / len(ms["JSON"]) * 1000,
                "gateway_cpu_ms_binary": cpu["binary"] / len(ms["binary"]) * 1000,
            })  # fmt: skip
    return rows


async def run(stack: Stack, requests: int, seconds: float, concurrency: int, *, only_oip: bool = False) -> None:
    """All four measurements (or only the OIP one), each printed as a Markdown table when done."""
    gw, ts, tf = stack.gateway_url, stack.torchserve_url, stack.tfserving_rest_url
    mlp = json.dumps({"instances": [[0.1, 0.2, 0.3, 0.4]]}).encode()
    cnn = json.dumps({"instances": np.random.default_rng(0).normal(size=(1, 3, 32, 32)).round(4).tolist()}).encode()

    def via(model: str, version: int) -> str:
        return f"{gw}/v1/models/{model}/versions/{version}:predict"

    x_mlp = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    x_cnn = np.asarray(json.loads(cnn)["instances"], dtype=np.float32)
    if only_oip:
        print("\n### cnn through the Open Inference Protocol, JSON and binary, one at a time (ms)\n")
        print(markdown(await oip_forms(stack, x_cnn, requests)), flush=True)
        return
    lat = await latency({
        "mlp v1 (TorchServe REST)": (f"{ts}/predictions/mlp/1", via("mlp", 1)),
        "mlp v2 (TF Serving gRPC)": (grpc_direct(stack.tfserving_target, "mlp", 2, x_mlp), via("mlp", 2)),
        "mlp v2 (TF Serving dev REST)": (f"{tf}/v1/models/mlp/versions/2:predict", via("mlp", 2)),
    }, mlp, requests)  # fmt: skip
    print("\n### Latency, one request at a time (ms)\n")
    print(markdown(lat), flush=True)
    thr = await throughput({
        "cnn v1 (TorchServe REST)": (f"{ts}/predictions/cnn/1", via("cnn", 1)),
        "cnn v2 (TF Serving gRPC)": (grpc_direct(stack.tfserving_target, "cnn", 2, x_cnn), via("cnn", 2)),
    }, cnn, concurrency, seconds)  # fmt: skip
    print(f"\n### Throughput at saturation, {concurrency} concurrent clients (requests/s)\n")
    print(markdown(thr), flush=True)
    before, after = await memory_after(f"{gw}/v1/models/mlp/versions/1:predict", mlp, stack.gateway_pid)
    ready = stack.start_to_ready()
    print("\n### Gateway process\n")
    print(markdown([{"rss_before_mb": before, "rss_after_10k_mb": after,
                     "start_to_ready_s_median": statistics.median(ready)}]))  # fmt: skip
    print("\n### cnn through the Open Inference Protocol, JSON and binary, one at a time (ms)\n")
    print(markdown(await oip_forms(stack, x_cnn, requests)), flush=True)
