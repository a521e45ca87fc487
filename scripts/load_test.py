"""Load test: hold the gateway at its measured capacity, then check errors, latency and memory.

    .venv/bin/python scripts/load_test.py [--seconds 60] [--fraction 0.9] [--concurrency 16]
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
after its first ``--warmup`` seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "deploy")]

from bench_dataplane import closed_loop, pct, rss_mb, table, timed_post  # noqa: E402
from localstack import LocalStack, Ports  # noqa: E402

JSON = {"Content-Type": "application/json"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WINDOW_S = 10


@dataclass(frozen=True)
class Target:
    url: str
    body: bytes


@dataclass
class Sample:
    """Taken once a second: seconds into the hold, the gateway's RSS, CPU seconds used so far by name."""

    at: float
    rss_mb: float
    cpu: dict[str, float]


@dataclass
class Hold:
    """The open loop's record: each answer as (seconds into the hold, latency ms, outcome)."""

    rate: float
    start: float = field(default_factory=time.perf_counter)
    answers: list[tuple[float, float, str]] = field(default_factory=list)
    missed: int = 0
    samples: list[Sample] = field(default_factory=list)


def mlp_mix(gateway_url: str) -> list[Target]:
    """``mlp`` v1 (TorchServe) and v2 (TF Serving gRPC) through the gateway, each with its sample input."""
    return [
        Target(f"{gateway_url}/v1/models/mlp/versions/{v}:predict",
               (ROOT / "model_store" / "mlp" / str(v) / "sample_input.json").read_bytes())
        for v in (1, 2)
    ]  # fmt: skip


def client(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit), timeout=aiohttp.ClientTimeout(total=10))


async def measure_capacity(mix: list[Target], concurrency: int, seconds: float) -> tuple[float, int]:
    """Requests/s and errors of ``concurrency`` closed-loop clients taking the targets in turn."""
    async with client(concurrency) as session:
        turns = itertools.cycle(mix)

        def call() -> Awaitable[float]:
            target = next(turns)
            return timed_post(session, target.url, target.body)

        await closed_loop(call, b"", concurrency, 2)  # warm up
        return await closed_loop(call, b"", concurrency, seconds)


async def post(session: aiohttp.ClientSession, target: Target) -> str:
    """``ok``, ``HTTP <status>`` for any other status, or the name of the exception."""
    try:
        async with session.post(target.url, data=target.body, headers=JSON) as response:
            await response.read()
    except Exception as exc:
        return type(exc).__name__
    return "ok" if response.status == 200 else f"HTTP {response.status}"


async def scheduled_request(session: aiohttp.ClientSession, target: Target, due: float, hold: Hold) -> None:
    outcome = await post(session, target)
    now = time.perf_counter()
    hold.answers.append((now - hold.start, (now - due) * 1000, outcome))


async def open_loop(session: aiohttp.ClientSession, mix: list[Target], hold: Hold, seconds: int, bound: int) -> None:
    """Start request ``i`` at ``i / rate`` into the hold, unless ``bound`` requests are still open."""
    outstanding: set[asyncio.Task[None]] = set()
    for i in range(round(hold.rate * seconds)):
        due = hold.start + i / hold.rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))  # yields even when behind schedule
        if len(outstanding) >= bound:
            hold.missed += 1
            continue
        task = asyncio.create_task(scheduled_request(session, mix[i % len(mix)], due, hold))
        outstanding.add(task)
        task.add_done_callback(outstanding.discard)
    await asyncio.gather(*outstanding)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (user, nice, system, irq, softirq; not steal)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / CLOCK_TICKS


def cpu_seconds(groups: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each service's live processes, by this client, and by the machine."""
    used = dict.fromkeys(groups, 0.0)
    name_of = {pgid: name for name, pgid in groups.items()}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process has just ended
        name = name_of.get(int(fields[2]))  # pgrp; utime and stime follow at 11 and 12
        if name is not None:
            used[name] += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    used["load client"] = time.process_time()
    used["machine"] = machine_busy_seconds()
    return used


async def sample_every_second(hold: Hold, groups: dict[str, int], seconds: int) -> None:
    for k in range(seconds + 1):
        await asyncio.sleep(max(0.0, hold.start + k - time.perf_counter()))
        sample = Sample(time.perf_counter() - hold.start, rss_mb(groups["gateway"]), cpu_seconds(groups))
        hold.samples.append(sample)


def process_groups(stack: LocalStack) -> dict[str, int]:
    """Each service's process group (its leader's pid): TorchServe's Java frontend and workers share one."""
    return {name: service.proc.pid for name, service in stack.services.items() if service.proc is not None}


async def hold_load(stack: LocalStack, mix: list[Target], rate: float, seconds: int, bound: int) -> Hold:
    async with client(bound) as session:
        hold = Hold(rate)
        await asyncio.gather(
            open_loop(session, mix, hold, seconds, bound),
            sample_every_second(hold, process_groups(stack), seconds),
        )
    return hold


def errors_by_kind(answers: list[tuple[float, float, str]]) -> Counter[str]:
    return Counter(outcome for _, _, outcome in answers if outcome != "ok")


def hold_summary(hold: Hold) -> dict[str, object]:
    latencies = [ms for _, ms, _ in hold.answers]
    errors = errors_by_kind(hold.answers)
    return {
        "target_rps": hold.rate,
        "achieved_rps": len(hold.answers) / max(at for at, _, _ in hold.answers),
        "requests": len(hold.answers),
        "errors": ", ".join(f"{kind}: {n}" for kind, n in errors.most_common()) or "0",
        "missed_ticks": hold.missed,
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "p99.9_ms": pct(latencies, 99.9),
    }


def rss_slope(samples: list[Sample], warmup: float) -> float:
    """Least-squares growth of the gateway's RSS, MB per minute, over the samples after ``warmup`` s."""
    steady = [s for s in samples if s.at >= warmup]
    slope_per_s = np.polyfit([s.at for s in steady], [s.rss_mb for s in steady], 1)[0]
    return float(slope_per_s) * 60


def memory_summary(samples: list[Sample], warmup: float, limit: float) -> dict[str, object]:
    return {
        "rss_start_mb": samples[0].rss_mb,
        "rss_end_mb": samples[-1].rss_mb,
        "rss_max_mb": max(s.rss_mb for s in samples),
        f"slope_mb_per_min_after_{warmup:g}s": rss_slope(samples, warmup),
        "limit_mb_per_min": limit,
    }


def cpu_percent(first: Sample, last: Sample, name: str) -> float:
    """``name``'s CPU between two samples, in percent of one core."""
    return 100 * (last.cpu[name] - first.cpu[name]) / (last.at - first.at)


def cpu_rows(hold: Hold) -> list[dict[str, object]]:
    """Each service's CPU over the hold, and per request of the mix (TorchServe serves every other one)."""
    first, last = hold.samples[0], hold.samples[-1]
    return [{"process": name, "cpu_pct_of_one_core": cpu_percent(first, last, name),
             "cpu_ms_per_request": 1000 * (last.cpu[name] - first.cpu[name]) / len(hold.answers)}
            for name in first.cpu]  # fmt: skip


def window_rows(hold: Hold, seconds: int) -> list[dict[str, object]]:
    """Per ``WINDOW_S`` seconds of the hold: answers/s, errors, p99, the gateway's RSS and CPU at its end."""
    rows: list[dict[str, object]] = []
    for lo in range(0, seconds, WINDOW_S):
        hi = min(lo + WINDOW_S, seconds)
        answers = [a for a in hold.answers if lo <= a[0] < hi]
        rows.append({
            "seconds": f"{lo}-{hi}", "rps": len(answers) / (hi - lo),
            "errors": sum(errors_by_kind(answers).values()),
            "p99_ms": pct([ms for _, ms, _ in answers], 99) if answers else float("nan"),
            "gateway_rss_mb": hold.samples[hi].rss_mb,
            "gateway_cpu_pct": cpu_percent(hold.samples[lo], hold.samples[hi], "gateway"),
        })  # fmt: skip
    return rows


def problems(capacity_errors: int, hold: Hold, slope: float, max_slope: float, max_missed: float) -> list[str]:
    """What fails the gate; empty when the load was held cleanly."""
    found = []
    if capacity_errors:
        found.append(f"{capacity_errors} errors while measuring capacity")
    if errors := sum(errors_by_kind(hold.answers).values()):
        found.append(f"{errors} errors during the hold")
    ticks = len(hold.answers) + hold.missed
    if hold.missed > max_missed * ticks:
        found.append(f"{hold.missed} of {ticks} ticks missed, the load was not held (limit {max_missed:.1%})")
    if slope > max_slope:
        found.append(f"gateway RSS grew {slope:.2f} MB/min (limit {max_slope:g})")
    return found


async def main_async(args: argparse.Namespace, stack: LocalStack) -> int:
    mix = mlp_mix(stack.gateway_url)
    capacity, capacity_errors = await measure_capacity(mix, args.concurrency, args.capacity_seconds)
    print(f"\n### Capacity: mlp v1 (TorchServe REST) and v2 (TF Serving gRPC) alternated, "
          f"{args.concurrency} closed-loop clients\n")  # fmt: skip
    print(table([{"seconds": args.capacity_seconds, "capacity_rps": capacity, "errors": capacity_errors}]), flush=True)
    if not capacity:
        print("\nresult: FAIL: no request succeeded while measuring capacity")
        return 1
    bound = args.max_outstanding or 4 * args.concurrency
    hold = await hold_load(stack, mix, capacity * args.fraction, args.seconds, bound)
    print(f"\n### Hold: open loop at {args.fraction:g} x capacity for {args.seconds} s "
          f"(at most {bound} outstanding; latency from the scheduled start)\n")  # fmt: skip
    print(table([hold_summary(hold)]))
    print(f"\n### Gateway memory over the hold (one sample a second; slope after {args.warmup:g} s)\n")
    print(table([memory_summary(hold.samples, args.warmup, args.max_slope)]))
    print(f"\n### Per {WINDOW_S} s of the hold\n")
    print(table(window_rows(hold, args.seconds)))
    print(f"\n### CPU over the hold, percent of one core (the machine has {100 * (os.cpu_count() or 1)}%)\n")
    print(table(cpu_rows(hold)))
    slope = rss_slope(hold.samples, args.warmup)
    found = problems(capacity_errors, hold, slope, args.max_slope, args.max_missed)
    print("\nresult: " + ("FAIL: " + "; ".join(found) if found else "PASS"), flush=True)
    return 1 if found else 0


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
    print(f"command: {' '.join(sys.argv)}\nmachine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalStack(ROOT / "model_store", Path(tmp), Ports.free()) as stack,
    ):
        return asyncio.run(main_async(args, stack))


if __name__ == "__main__":
    sys.exit(main())
