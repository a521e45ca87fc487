"""The data plane's floor, side by side in one run (issue 16): the gateway against the anchors.

Per ``mlp`` stack, the same request four ways: **direct** to the backend, through an **nginx** hop
(a keep-alive upstream pool; gRPC through ``grpc_pass`` for TF Serving), a **bare** ASGI app answering
a fixed body under the same server as the gateway (uvicorn), and the **gateway**:

- latency one request at a time, the paths interleaved request by request so that machine noise
  hits them alike: p50/p99, added over direct, and the gateway's added minus the nginx hop's;
- a closed loop of ``concurrency`` clients per path (``Client``: the gateway's lean HTTP/1.1
  client; gRPC through the gateway's own client): requests/s and the serving process's CPU per
  request (user + system from ``/proc/<pid>/stat``, its child processes included: nginx's worker,
  the gateway's workers), as a ratio to the bare ASGI answer's.

``cnn`` at saturation: direct, through nginx, and the gateway's forms (TF Serving REST JSON, OIP JSON,
OIP binary tensor data), each as a ratio to direct. ``targets`` turns the rows into the issue's
targets, reached or not. The processes are the caller's (``scripts/bench_dataplane.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from gateway.backends import http1
from loadgen.report import pct
from loadgen.scrape import CLOCK_TICKS, rss_mb
from loadgen.send import JSON, Direct

Call = Callable[[], Awaitable[float]]


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its live descendants (``/proc/<pid>/task/*/children``)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return pids


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants."""
    total = 0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def worker_rss_mb(pid: int) -> list[float]:
    """Resident memory (MB) of each serving process: the workers under ``pid``, or ``pid`` itself."""
    pids = tree_pids(pid)
    workers = pids[1:] or pids
    return [rss_mb(p) for p in workers]


@dataclass(frozen=True)
class Way:
    """One way to make the request: a name, the call (a URL, or a coroutine function timing itself),
    the process whose CPU it costs (``None``: not measured), a body and its headers."""

    name: str
    call: Direct
    pid: int | None = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))


class Client:
    """The measuring client: the gateway's lean pooled HTTP/1.1 client (``gateway.backends.http1``),
    a third of aiohttp's CPU per request, so that on a small machine the client takes less of the
    cores the servers under test need. One pool per address, at most ``limit`` connections each."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self.pools: dict[tuple[str, int], http1.Pool] = {}

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for pool in self.pools.values():
            pool.close()

    async def timed(self, way: Way) -> float:
        """Milliseconds of one request of ``way`` (``RuntimeError`` unless it answers 200)."""
        if not isinstance(way.call, str):
            return await way.call()
        url = urlsplit(way.call)
        key = (url.hostname or "127.0.0.1", url.port or 80)
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = http1.Pool(*key, limit=self.limit)
        ctype = way.headers.get("Content-Type", "application/json")
        extra = "".join(f"{k}: {v}\r\n" for k, v in way.headers.items() if k != "Content-Type").encode()
        start = time.perf_counter()
        async with asyncio.timeout(30):
            status, _, _ = await pool.post(url.path + (f"?{url.query}" if url.query else ""), way.body, ctype, extra)
        if status != 200:
            raise RuntimeError(f"{way.name}: {way.call} -> {status}")
        return (time.perf_counter() - start) * 1000


async def latency(ways: list[Way], n: int, warmup: int = 200) -> dict[str, list[float]]:
    """Milliseconds of ``n`` requests per way, one at a time, the ways interleaved request by request."""
    ms: dict[str, list[float]] = {w.name: [] for w in ways}
    async with Client() as client:
        for _ in range(warmup):
            for w in ways:
                await client.timed(w)
        for _ in range(n):
            for w in ways:
                ms[w.name].append(await client.timed(w))
    return ms


async def closed(
    way: Way, concurrency: int, seconds: float, rate: float | None = None
) -> tuple[float, float | None, int]:
    """``concurrency`` clients for ``seconds``: requests/s, the way's process CPU ms per request, errors.
    With ``rate``, the clients together send at most ``rate`` requests a second (each waits for its
    next turn on an even schedule): the CPU per request of a fast server at the rate a slower path
    runs at, where wake-ups are not shared between requests as they are at saturation."""
    done = errors = 0
    async with Client(limit=concurrency) as session:
        await asyncio.gather(*(session.timed(way) for _ in range(concurrency * 2)))  # open the connections
        deadline = time.perf_counter() + seconds
        interval = concurrency / rate if rate else 0.0  # each client's, between its sends

        async def client(index: int) -> None:
            nonlocal done, errors
            due = time.perf_counter() + index * interval / concurrency  # the clients' turns spread out
            while time.perf_counter() < deadline:
                if interval:
                    if (wait := due - time.perf_counter()) > 0:
                        await asyncio.sleep(wait)
                    due += interval
                try:
                    await session.timed(way)
                    done += 1
                except Exception:
                    errors += 1

        cpu0 = tree_cpu_seconds(way.pid) if way.pid else 0.0
        start = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
        cpu = (tree_cpu_seconds(way.pid) - cpu0) / max(done, 1) * 1000 if way.pid else None
    return done / elapsed, cpu, errors


async def _two_rounds(
    ways: list[Way], concurrency: int, seconds: float
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, int]]:
    """Each way under ``concurrency`` clients for ``seconds / 2``, twice, in opposite orders (so
    drift on a shared machine hits every way alike): requests/s and CPU per request of each round,
    and the errors of both."""
    rps: dict[str, list[float]] = {w.name: [] for w in ways}
    cpu: dict[str, list[float]] = {w.name: [] for w in ways}
    errors: dict[str, int] = dict.fromkeys(rps, 0)
    for order in (ways, ways[::-1]):
        for w in order:
            r, c, e = await closed(w, concurrency, seconds / 2)
            rps[w.name].append(r)
            errors[w.name] += e
            if c is not None:
                cpu[w.name].append(c)
    return rps, cpu, errors


async def side_by_side(
    target: str, ways: list[Way], requests: int, concurrency: int, seconds: float
) -> list[dict[str, object]]:
    """One row per way: latency one at a time against the first way (direct), then CPU per request and
    requests/s under ``concurrency`` clients (two rounds in opposite orders, averaged)."""
    ms = await latency(ways, requests)
    direct = ways[0].name
    d50, d99 = pct(ms[direct], 50), pct(ms[direct], 99)
    rps, cpu, errors = await _two_rounds(ways, concurrency, seconds)
    rows: list[dict[str, object]] = []
    for w in ways:
        p50, p99 = pct(ms[w.name], 50), pct(ms[w.name], 99)
        rows.append({
            "target": target, "path": w.name, "p50_ms": p50, "p99_ms": p99,
            "added_p50_ms": p50 - d50 if w.name != direct else 0.0,
            "added_p99_ms": p99 - d99 if w.name != direct else 0.0,
            "rps": sum(rps[w.name]) / len(rps[w.name]),
            "cpu_us_per_request": sum(cpu[w.name]) / len(cpu[w.name]) * 1000 if cpu[w.name] else None,
            "errors": errors[w.name],
        })  # fmt: skip
    bases: dict[str, dict[str, object]] = {}  # the rows the CPU ratios divide by
    bare_way = next((w for w in ways if w.name.startswith("bare")), None)
    if bare_way is not None:  # the bare answer again, at the rate the backend allows the others
        rate = float(rows[0]["rps"])  # type: ignore[arg-type]
        paced = [await closed(bare_way, concurrency, seconds / 2, rate=rate) for _ in range(2)]
        bases["cpu_x_bare_saturated"] = next(row for row in rows if row["path"] == bare_way.name)
        bases["cpu_x_bare"] = {
            "target": target, "path": f"{bare_way.name} at direct's rate",
            "rps": sum(r for r, _, _ in paced) / 2,
            "cpu_us_per_request": sum(c or 0.0 for _, c, _ in paced) / 2 * 1000,
            "errors": sum(e for _, _, e in paced),
        }  # fmt: skip
        rows.append(bases["cpu_x_bare"])
    for key in ("cpu_x_bare", "cpu_x_bare_saturated"):
        base = bases[key]["cpu_us_per_request"] if key in bases else None
        for row in rows:
            own = row["cpu_us_per_request"]
            row[key] = own / base if isinstance(own, float) and isinstance(base, float) and base else None
    return rows


async def saturation(target: str, ways: list[Way], concurrency: int, seconds: float) -> list[dict[str, object]]:
    """Requests/s of each way at ``concurrency`` clients (two rounds in opposite orders), as a ratio
    to the first (direct); the serving process's CPU per request where it has one."""
    for w in ways:  # warm up
        await closed(w, concurrency, 1.0)
    rps, cpu, errors = await _two_rounds(ways, concurrency, seconds)
    direct = sum(rps[ways[0].name]) / 2
    return [
        {
            "target": target,
            "path": w.name,
            "rps": sum(rps[w.name]) / 2,
            "x_direct": sum(rps[w.name]) / 2 / direct,
            "cpu_us_per_request": sum(cpu[w.name]) / len(cpu[w.name]) * 1000 if cpu[w.name] else None,
            "errors": errors[w.name],
        }
        for w in ways
    ]


def _get(rows: list[dict[str, object]], target: str, path: str, key: str) -> float:
    for r in rows:
        if r["target"] == target and str(r["path"]).startswith(path):
            value = r[key]
            return float(value) if isinstance(value, (int, float)) else float("nan")
    return float("nan")


def targets(
    mlp: list[dict[str, object]],
    cnn: list[dict[str, object]],
    rss: list[float],
    ready_s: float,
    workers_ratio: float | None,
) -> list[dict[str, object]]:
    """The issue's targets, each with the value measured in this run and whether it is reached."""
    out: list[dict[str, object]] = []

    def add(what: str, value: float, limit: float, at_most: bool = True) -> None:
        ok = value <= limit if at_most else value >= limit
        out.append({"target": what, "value": value, "limit": f"{'<=' if at_most else '>='} {limit:.3f}",
                    "reached": "yes" if ok else "**no**"})  # fmt: skip

    for t in dict.fromkeys(str(r["target"]) for r in mlp):
        add(f"{t}: gateway CPU/request, x bare ASGI at direct's rate", _get(mlp, t, "gateway", "cpu_x_bare"), 3.5)
        add(f"{t}: gateway CPU/request, x bare ASGI saturated", _get(mlp, t, "gateway", "cpu_x_bare_saturated"), 3.5)
        nginx50, nginx99 = _get(mlp, t, "nginx", "added_p50_ms"), _get(mlp, t, "nginx", "added_p99_ms")
        add(f"{t}: added p50 (ms), nginx hop's + 0.4", _get(mlp, t, "gateway", "added_p50_ms"), nginx50 + 0.4)
        add(f"{t}: added p99 (ms), nginx hop's + 2", _get(mlp, t, "gateway", "added_p99_ms"), nginx99 + 2.0)
    for r in cnn:
        if str(r["path"]).startswith("gateway"):
            add(f"{r['target']} {r['path']}: rps x direct", float(r["x_direct"]), 0.9, at_most=False)  # type: ignore[arg-type]
    if workers_ratio is not None:
        add("2 workers / 1 worker requests/s (backend not the bottleneck)", workers_ratio, 1.7, at_most=False)
    add("resident memory per worker (MB, max)", max(rss), 150.0)
    add("start to ready (s, median)", ready_s, 2.0)
    return out
