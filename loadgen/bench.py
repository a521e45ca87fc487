"""The data-plane benchmark's measurements: the gateway against direct calls to the same backends.

1. ``mlp`` on each stack side by side with the anchors of the same run (``loadgen.floor``):
   direct, an nginx hop, a bare ASGI answer under uvicorn, the gateway; latency one request at a
   time (interleaved) and, under ``cpu_concurrency`` clients, requests/s and CPU per request;
2. ``cnn`` at saturation (``concurrency`` clients): direct, nginx, and the gateway's forms (TF
   Serving REST JSON, OIP JSON, OIP binary tensor data), as ratios to direct;
3. with a backend that is not the bottleneck (nginx answering TorchServe's fixed ``mlp`` answer,
   labelled as such), the gateway with 1 worker against ``GATEWAY_WORKERS=2``: requests/s;
4. the gateway's resident memory per worker, and its time from start to ready; then the issue's
   targets, reached or not;
5. ``cnn`` through the Open Inference Protocol as JSON and as binary tensor data (the Triton
   client's default form), one request at a time on each stack: latency against the direct call,
   and the gateway process's CPU per request (``oip_forms``; alone with ``only_oip``).

The stack itself (ports, processes) is the caller's: ``scripts/bench_dataplane.py`` starts the local
stack and hands its addresses over as ``Stack``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np

from loadgen import floor, wrk
from loadgen.bodies import oip_bodies
from loadgen.floor import Way
from loadgen.report import markdown, pct
from loadgen.scrape import CLOCK_TICKS, machine_busy_seconds
from loadgen.send import call_direct, timed_post

CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class Stack:
    """Where the stack under test answers, and how to time a fresh gateway from start to ready."""

    gateway_url: str
    torchserve_url: str
    tfserving_rest_url: str
    tfserving_target: str  # host:port of TF Serving's gRPC API
    gateway_pid: int
    start_to_ready: Callable[[], list[float]]
    #: The anchors (None: left out): nginx's HTTP hop to TorchServe and gRPC hop to TF Serving,
    #: its master's pid; the bare ASGI app under uvicorn and its pid.
    nginx_url: str | None = None
    nginx_grpc_target: str | None = None
    nginx_pid: int | None = None
    bare_url: str | None = None
    bare_pid: int | None = None
    #: A gateway of ``n`` workers in front of a TorchServe look-alike that answers at once: its URL
    #: and pid while the context lasts.
    fixed_gateway: Callable[[int], AbstractContextManager[tuple[str, int]]] | None = None
    #: A second gateway whose TF Serving ``Predict`` goes over ``grpc.aio`` (the client the lean
    #: HTTP/2 one replaced), its URL and pid: the two clients side by side in one run.
    grpc_gateway_url: str | None = None
    grpc_gateway_pid: int | None = None


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


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


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


def _ways(stack: Stack, model: str, version: int, body: bytes, x: np.ndarray, cnn: bool) -> list[Way]:
    """The ways to one version: direct, nginx, (``mlp``) the bare ASGI answer, the gateway's forms."""
    gw, ts = stack.gateway_url, stack.torchserve_url
    torchserve = version == 1
    ways = [
        Way("direct", f"{ts}/predictions/{model}/{version}", body=body)
        if torchserve
        else Way("direct gRPC", grpc_direct(stack.tfserving_target, model, version, x))
    ]
    if torchserve and stack.nginx_url:
        ways.append(Way("nginx", f"{stack.nginx_url}/predictions/{model}/{version}", stack.nginx_pid, body))
    if not torchserve and stack.nginx_grpc_target:
        ways.append(Way("nginx gRPC", grpc_direct(stack.nginx_grpc_target, model, version, x), stack.nginx_pid))
    if not cnn and stack.bare_url:
        ways.append(Way("bare ASGI (uvicorn)", stack.bare_url, stack.bare_pid, body))
    ways.append(Way("gateway", f"{gw}/v1/models/{model}/versions/{version}:predict", stack.gateway_pid, body))
    if not torchserve and not cnn and stack.grpc_gateway_url:
        url = f"{stack.grpc_gateway_url}/v1/models/{model}/versions/{version}:predict"
        ways.append(Way("gateway, Predict over grpc.aio", url, stack.grpc_gateway_pid, body))
    if cnn:
        url = f"{gw}/v2/models/{model}/versions/{version}/infer"
        for form, (data, headers) in oip_bodies(x).items():
            ways.append(Way(f"gateway OIP {form}", url, stack.gateway_pid, data, headers))
    return ways


async def workers_phase(stack: Stack, body: bytes, concurrency: int, seconds: float) -> list[dict[str, object]]:
    """1 worker against 2 in front of the fixed-answer backend, alternated 1, 2, 2, 1; the load
    from ``wrk`` where it is installed (a few µs of CPU a request, where the Python client takes
    25-30 of the same two cores), else from the Python client."""
    assert stack.fixed_gateway is not None
    closed, client = (wrk.closed, "wrk") if wrk.available() else (floor.closed, "the Python client")
    rows: list[dict[str, object]] = []
    results: dict[int, list[tuple[float, float | None]]] = {1: [], 2: []}
    rss: dict[int, list[float]] = {}
    busy: dict[int, list[float]] = {1: [], 2: []}  # the machine's cores, busy share (all processes)
    for n in (1, 2, 2, 1):
        with stack.fixed_gateway(n) as (url, pid):
            way = Way(f"gateway, {n} worker(s)", f"{url}/v1/models/mlp/versions/1:predict", pid, body)
            await closed(way, concurrency, 1.0)  # warm up every worker
            busy0, start = machine_busy_seconds(), time.perf_counter()
            rps, cpu, errors = await closed(way, concurrency, seconds / 2)
            busy[n].append((machine_busy_seconds() - busy0) / (time.perf_counter() - start) / CORES)
            if errors:
                raise RuntimeError(f"{way.name}: {errors} errors")
            results[n].append((rps, cpu))
            rss[n] = floor.worker_rss_mb(pid)
    for n, runs in results.items():
        rows.append({
            "gateway": f"{n} worker(s), backend: nginx fixed answer, load: {client}",
            "rps": statistics.mean(r for r, _ in runs),
            "cpu_us_per_request": statistics.mean(c or 0.0 for _, c in runs) * 1000,
            "rss_mb_per_worker": max(rss[n]),
            "machine_busy_pct": statistics.mean(busy[n]) * 100,
        })  # fmt: skip
    for row in rows:
        row["x_one_worker"] = float(row["rps"]) / float(rows[0]["rps"])  # type: ignore[arg-type]
    return rows


async def run(
    stack: Stack,
    requests: int,
    seconds: float,
    concurrency: int,
    *,
    only_oip: bool = False,
    only_workers: bool = False,
    cpu_concurrency: int = 8,
) -> None:
    """All measurements (or only the OIP one), each printed as a Markdown table when done."""
    mlp = json.dumps({"instances": [[0.1, 0.2, 0.3, 0.4]]}).encode()
    cnn = json.dumps({"instances": np.random.default_rng(0).normal(size=(1, 3, 32, 32)).round(4).tolist()}).encode()
    x_mlp = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    x_cnn = np.asarray(json.loads(cnn)["instances"], dtype=np.float32)
    if only_oip:
        print("\n### cnn through the Open Inference Protocol, JSON and binary, one at a time (ms)\n")
        print(markdown(await oip_forms(stack, x_cnn, requests)), flush=True)
        return
    if only_workers:
        print(f"\n### Workers, {concurrency} clients, backend not the bottleneck (nginx fixed answer)\n")
        print(markdown(await workers_phase(stack, mlp, concurrency, seconds)), flush=True)
        return
    side: list[dict[str, object]] = []
    for name, version in (("mlp v1 (TorchServe REST)", 1), ("mlp v2 (TF Serving gRPC)", 2)):
        ways = _ways(stack, "mlp", version, mlp, x_mlp, cnn=False)
        side += await floor.side_by_side(name, ways, requests, cpu_concurrency, seconds)
    print(f"\n### mlp side by side: one at a time (ms), then {cpu_concurrency} clients (rps, CPU)\n")
    print(markdown(side), flush=True)
    sat: list[dict[str, object]] = []
    for name, version in (("cnn v1 (TorchServe)", 1), ("cnn v2 (TF Serving gRPC)", 2)):
        sat += await floor.saturation(name, _ways(stack, "cnn", version, cnn, x_cnn, cnn=True), concurrency, seconds)
    print(f"\n### cnn at saturation, {concurrency} concurrent clients\n")
    print(markdown(sat), flush=True)
    ratio = None
    if stack.fixed_gateway is not None:
        workers = await workers_phase(stack, mlp, concurrency, seconds)
        ratio = float(workers[1]["x_one_worker"])  # type: ignore[arg-type]
        print(f"\n### Workers, {concurrency} clients, backend not the bottleneck (nginx fixed answer)\n")
        print(markdown(workers), flush=True)
    rss = floor.worker_rss_mb(stack.gateway_pid)
    ready = stack.start_to_ready()
    print("\n### Gateway process\n")
    print(markdown([{"rss_mb_per_worker": max(rss), "start_to_ready_s_median": statistics.median(ready),
                     "start_to_ready_s": ", ".join(f"{t:.2f}" for t in ready)}]))  # fmt: skip
    print("\n### Targets (issue 16), ratios of this run\n")
    print(markdown(floor.targets(side, sat, rss, statistics.median(ready), ratio)), flush=True)
    print("\n### cnn through the Open Inference Protocol, JSON and binary, one at a time (ms)\n")
    print(markdown(await oip_forms(stack, x_cnn, min(requests, 500))), flush=True)
