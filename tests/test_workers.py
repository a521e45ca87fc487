"""``GATEWAY_WORKERS``: every metric works in prometheus_client's multiprocess mode, the metrics
directory starts empty, and a worker that cannot start stops the supervisor with an error."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
from localstack import free_port
from prometheus_client import Enum, Gauge, Info

from gateway import metrics, workers


def test_every_metric_works_with_several_workers():
    collectors = list(metrics.REGISTRY._collector_to_names)  # every metric the gateway defines
    assert metrics.MODEL_VERSION_INFO in collectors
    for collector in collectors:
        assert not isinstance(collector, (Info, Enum)), f"{collector}: not supported in multiprocess mode"
        if isinstance(collector, Gauge):
            # 'all' (the default) would export one series per worker pid instead of one value.
            assert collector._multiprocess_mode != "all", f"{collector}: gauge without a multiprocess_mode"


def test_version_mappings_are_exactly_the_last_set():
    mappings = metrics.VersionMappings()
    mappings.set([("m", "stable", "1", "torchserve"), ("m", "default", "1", "torchserve")])
    mappings.set([("m", "stable", "2", "tfserving")])
    (family,) = mappings.collect()
    assert [(s.labels, s.value) for s in family.samples] == [
        ({"model": "m", "label": "stable", "version": "2", "backend": "tfserving"}, 1)
    ]


def test_the_metrics_directory_is_emptied_of_an_earlier_runs_files(tmp_path, monkeypatch):
    (tmp_path / "counter_123.db").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("kept")
    monkeypatch.setenv(workers.MULTIPROC_ENV, str(tmp_path))
    path, owned = workers.metrics_dir()
    assert (path, owned) == (tmp_path, False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    monkeypatch.delenv(workers.MULTIPROC_ENV)
    path, owned = workers.metrics_dir()
    assert owned and path.is_dir() and not any(path.iterdir())
    path.rmdir()


def test_a_worker_that_cannot_start_stops_the_gateway_with_an_error(tmp_path):
    port = free_port()
    taken = socket.socket()  # a listener without SO_REUSEPORT: the workers cannot share its port
    taken.bind(("127.0.0.1", port))
    taken.listen()
    env = {
        **os.environ,
        "GATEWAY_WORKERS": "2",
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_MODEL_STORE": str(tmp_path),
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}",
    }
    env.pop(workers.MULTIPROC_ENV, None)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "serve"], env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        taken.close()
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "exited at start" in done.stderr


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_workers_must_be_a_positive_count(value, tmp_path):
    env = {**os.environ, "GATEWAY_WORKERS": value, "GATEWAY_MODEL_STORE": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "workers" in done.stderr


def test_a_replica_that_left_the_pool_is_not_in_the_scrape_with_several_workers(tmp_path):
    """In multiprocess mode a removed series stays in the worker's file; the scrape leaves out the
    series of a replica no longer in the pool (else ``gateway_replica_up`` stays 1 for a replica
    scaled down, and the stack's replica count with it)."""
    script = textwrap.dedent(
        """
        import asyncio
        from prometheus_client import generate_latest
        from gateway import metrics
        from tests.routing.test_replica_pool import make_pool, record

        assert metrics.MULTIPROCESS

        async def main():
            pool, _ = make_pool(ttl=0.2)
            await pool.apply([record("w-0", ("mlp", 1)), record("w-1", ("mlp", 1))])
            print("BOTH", generate_latest(metrics.scrape_registry()).decode())
            await asyncio.sleep(0.25)
            await pool.apply([record("w-0", ("mlp", 1))])  # w-1 lapsed
            print("ONE", generate_latest(metrics.scrape_registry()).decode())

        asyncio.run(main())
        """
    )
    env = {**os.environ, workers.MULTIPROC_ENV: str(tmp_path), "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    both, one = done.stdout.split("\nONE ")
    up = 'gateway_replica_up{replica="%s",stack="torchserve"} 1.0'
    assert up % "w-0" in both and up % "w-1" in both
    assert up % "w-0" in one
    assert 'replica="w-1"' not in one, one
