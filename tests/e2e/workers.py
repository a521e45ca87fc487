"""Helpers for the tests of ``GATEWAY_WORKERS``: the worker processes of a supervisor, and one
worker's own share of a metric, read from its files in the multiprocess directory."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families


def children(pid: int, count: int, deadline_s: float = 60.0) -> list[int]:
    """The ``count`` worker pids of supervisor ``pid`` (waits until that many run)."""
    deadline = time.monotonic() + deadline_s
    while True:
        pids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        if len(pids) >= count or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


def matches(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def scraped(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples with ``labels`` in a ``/metrics`` page."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and matches(s.labels, labels)
    )


def worker_value(metrics_dir: Path, pid: int, name: str, **labels: str) -> float:
    """Worker ``pid``'s own part of ``name`` (its files only, summed as a scrape would)."""
    with tempfile.TemporaryDirectory() as one:
        for path in metrics_dir.glob(f"*_{pid}.db"):
            shutil.copy(path, one)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=one)
        return sum(
            s.value
            for family in registry.collect()
            for s in family.samples
            if s.name == name and matches(s.labels, labels)
        )


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (its socket descriptors, matched in /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
