"""Numbers taken from outside the client: the gateway's ``/metrics`` histograms, processes' memory and CPU.

``/metrics`` gives the gateway's own view of each request (its total, the backend call, its own
overhead), read before and after a run and subtracted; ``/proc`` gives a process's resident memory
and the CPU time of process groups and of the whole machine (Linux only).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import aiohttp

from loadgen.targets import Target

Histogram = dict[str, Any]  # {"buckets": {le: count}, "sum": float, "count": float}


def gateway_histograms(text: str, target: Target) -> dict[str, Histogram]:
    """The target's request, backend and overhead histograms from a ``/metrics`` page, summed over series."""
    from prometheus_client.parser import text_string_to_metric_families

    names = {
        "gateway_request_duration_seconds": "request",
        "gateway_backend_duration_seconds": "backend",
        "gateway_overhead_seconds": "overhead",
    }
    out: dict[str, Histogram] = {key: {"buckets": {}, "sum": 0.0, "count": 0.0} for key in names.values()}
    for family in text_string_to_metric_families(text):
        key = names.get(family.name)
        if key is None:
            continue
        hist = out[key]
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model") != target.model or labels.get("version") != str(target.version):
                continue
            if sample.name.endswith("_bucket"):
                le = float(labels["le"])
                hist["buckets"][le] = hist["buckets"].get(le, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                hist["sum"] += sample.value
            elif sample.name.endswith("_count"):
                hist["count"] += sample.value
    return out


def histogram_delta(after: Histogram, before: Histogram) -> Histogram:
    """What was observed between two readings of the same histogram."""
    return {
        "buckets": {le: c - before["buckets"].get(le, 0.0) for le, c in after["buckets"].items()},
        "sum": after["sum"] - before["sum"],
        "count": after["count"] - before["count"],
    }


def bucket_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """``histogram_quantile`` as Prometheus computes it: linear within the bucket that holds rank ``q``."""
    edges = sorted(buckets.items())
    if not edges or edges[-1][1] <= 0:
        return None
    total = edges[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for le, cumulative in edges:
        if cumulative >= rank:
            if math.isinf(le):
                return lower  # in the +Inf bucket: the highest finite bound is all that is known
            if cumulative == below:
                return le
            return lower + (le - lower) * (rank - below) / (cumulative - below)
        lower, below = le, cumulative
    return lower


async def metrics_page(session: aiohttp.ClientSession, url: str) -> str | None:
    """The gateway's ``/metrics`` text, or ``None`` when it cannot be read."""
    try:
        async with session.get(f"{url}/metrics") as resp:
            return await resp.text() if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


# --- processes -----------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid``, MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


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
