"""The load test's measurements: capacity, then an open-loop hold at a fraction of it, and the gate.

1. capacity: a closed loop of ``concurrency`` clients (after 2 s of warm-up); the capacity is the
   requests/s it achieves;
2. hold: an open loop (``schedule.bounded``) at ``fraction`` of the capacity for ``seconds``;
   latency counts from the scheduled start, and a tick that finds ``bound`` requests still open is
   counted missed, not queued. Every second: the gateway's resident memory and each service's CPU;
3. the gate (``problems``): any error, more than ``max_missed`` of the ticks missed, or the
   gateway's memory growing faster than ``max_slope`` MB/minute after ``warmup`` seconds.

The stack is the caller's (``scripts/load_test.py``): it gives the targets and the process groups.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field

import numpy as np

from loadgen import schedule
from loadgen.report import markdown, pct
from loadgen.scrape import cpu_seconds, rss_mb
from loadgen.send import client, post_outcome, timed_post

WINDOW_S = 10


@dataclass(frozen=True)
class Target:
    """One URL of the mix, with its body."""

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


@dataclass(frozen=True)
class Limits:
    """The run's settings and its gate (``scripts/load_test.py --help`` says what each means)."""

    seconds: int = 60
    fraction: float = 0.9
    concurrency: int = 16
    capacity_seconds: float = 10.0
    max_outstanding: int | None = None
    warmup: float = 10.0
    max_slope: float = 5.0
    max_missed: float = 0.01


async def measure_capacity(mix: list[Target], concurrency: int, seconds: float) -> tuple[float, int]:
    """Requests/s and errors of ``concurrency`` closed-loop clients taking the targets in turn."""
    async with client(concurrency) as session:
        turns = itertools.cycle(mix)

        def call() -> Awaitable[float]:
            target = next(turns)
            return timed_post(session, target.url, target.body)

        await schedule.closed_loop(call, b"", concurrency, 2)  # warm up
        return await schedule.closed_loop(call, b"", concurrency, seconds)


async def sample_every_second(hold: Hold, groups: dict[str, int], seconds: int) -> None:
    for k in range(seconds + 1):
        await asyncio.sleep(max(0.0, hold.start + k - time.perf_counter()))
        sample = Sample(time.perf_counter() - hold.start, rss_mb(groups["gateway"]), cpu_seconds(groups))
        hold.samples.append(sample)


async def hold_load(groups: dict[str, int], mix: list[Target], rate: float, seconds: int, bound: int) -> Hold:
    """The open loop over ``mix`` at ``rate`` for ``seconds``, sampling ``groups`` (the gateway's included)."""
    async with client(bound) as session:
        hold = Hold(rate)

        async def send(i: int, due: float) -> None:
            target = mix[i % len(mix)]
            outcome = await post_outcome(session, target.url, target.body)
            now = time.perf_counter()
            hold.answers.append((now - hold.start, (now - due) * 1000, outcome))

        async def load() -> None:
            hold.missed = await schedule.bounded(hold.start, rate, seconds, bound, send)

        await asyncio.gather(load(), sample_every_second(hold, groups, seconds))
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


async def run(mix: list[Target], groups: dict[str, int], limits: Limits) -> int:
    """Capacity, hold and gate over ``mix``; prints Markdown tables and the result; 1 when the gate fails."""
    capacity, capacity_errors = await measure_capacity(mix, limits.concurrency, limits.capacity_seconds)
    print(f"\n### Capacity: mlp v1 (TorchServe REST) and v2 (TF Serving gRPC) alternated, "
          f"{limits.concurrency} closed-loop clients\n")  # fmt: skip
    capacity_row: dict[str, object] = {
        "seconds": limits.capacity_seconds,
        "capacity_rps": capacity,
        "errors": capacity_errors,
    }
    print(markdown([capacity_row]), flush=True)
    if not capacity:
        print("\nresult: FAIL: no request succeeded while measuring capacity")
        return 1
    bound = limits.max_outstanding or 4 * limits.concurrency
    hold = await hold_load(groups, mix, capacity * limits.fraction, limits.seconds, bound)
    print(f"\n### Hold: open loop at {limits.fraction:g} x capacity for {limits.seconds} s "
          f"(at most {bound} outstanding; latency from the scheduled start)\n")  # fmt: skip
    print(markdown([hold_summary(hold)]))
    print(f"\n### Gateway memory over the hold (one sample a second; slope after {limits.warmup:g} s)\n")
    print(markdown([memory_summary(hold.samples, limits.warmup, limits.max_slope)]))
    print(f"\n### Per {WINDOW_S} s of the hold\n")
    print(markdown(window_rows(hold, limits.seconds)))
    print(f"\n### CPU over the hold, percent of one core (the machine has {100 * (os.cpu_count() or 1)}%)\n")
    print(markdown(cpu_rows(hold)))
    slope = rss_slope(hold.samples, limits.warmup)
    found = problems(capacity_errors, hold, slope, limits.max_slope, limits.max_missed)
    print("\nresult: " + ("FAIL: " + "; ".join(found) if found else "PASS"), flush=True)
    return 1 if found else 0
