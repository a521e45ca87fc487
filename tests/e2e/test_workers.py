"""``GATEWAY_WORKERS=2`` against the real local stack: both workers serve the one port (and the
gRPC and metrics ports), and one scrape (of either worker) counts every request exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import httpx
import numpy as np
from localstack import free_port

from gateway.backends.tfserving.client import TFServingBackend
from gateway.core.types import InferenceRequest, Target
from tests.e2e.workers import children, listening_ports, scraped, worker_value

ROW = {"instances": [[0.1, 0.2, 0.3, 0.4]]}
COUNTED = {"model": "mlp", "version": "1", "code": "200"}


async def _send(url: str, n: int, concurrency: int = 8) -> list[int]:
    """``n`` POSTs, a new connection each (connections are what the kernel spreads over workers)."""
    statuses: list[int] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem, session.post(url, json=ROW) as r:
                await r.read()
                statuses.append(r.status)

        await asyncio.gather(*(one() for _ in range(n)))
    return statuses


async def _grpc_predict(target: str) -> np.ndarray:
    client = TFServingBackend(target)
    await client.start()
    try:
        x = np.array(ROW["instances"], dtype=np.float32)
        result = await client.infer(Target("mlp", 2, client), InferenceRequest(inputs={"x": x}))
        return next(iter(result.outputs(None).values()))
    finally:
        await client.close()


def test_two_workers_serve_one_port_and_a_scrape_counts_each_request_once(stack, tmp_path):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    stale = metrics_dir / "counter_424242.db"  # an earlier run's file: must not count
    stale.write_bytes(b"\0" * 16)
    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        "GATEWAY_WORKERS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "GATEWAY_GRPC_PORT": str(grpc_port),
        "GATEWAY_METRICS_PORT": str(metrics_port),
    }
    service = stack.start_gateway_process(port, name="two-workers", env=env)
    url = f"http://127.0.0.1:{port}"
    predict = f"{url}/v1/models/mlp/versions/1:predict"
    try:
        workers = children(service.proc.pid, 2)
        assert len(workers) == 2, workers
        assert not stale.exists()
        for pid in workers:  # every worker listens on every port (SO_REUSEPORT)
            deadline = time.monotonic() + 60
            while listening_ports(pid) != {port, grpc_port, metrics_port}:
                assert time.monotonic() < deadline, (pid, listening_ports(pid))
                time.sleep(0.2)
        sent = 0
        deadline = time.monotonic() + 60
        # Until both workers answered some (the second starts once the first listens).
        while not all(worker_value(metrics_dir, p, "gateway_requests_total", **COUNTED) > 0 for p in workers):
            assert time.monotonic() < deadline, "the requests never reached both workers"
            assert asyncio.run(_send(predict, 50)) == [200] * 50
            sent += 50
        assert asyncio.run(_send(predict, 200)) == [200] * 200
        sent += 200

        # (A request is counted just after its answer is sent: give the last ones a moment.)
        settle = time.monotonic() + 5
        while (
            sum(per_worker := [worker_value(metrics_dir, p, "gateway_requests_total", **COUNTED) for p in workers])
            < sent
        ):
            assert time.monotonic() < settle, (per_worker, sent)
            time.sleep(0.05)
        assert all(v > 0 for v in per_worker), per_worker
        assert sum(per_worker) == sent
        # gRPC (TF Serving's PredictionService, through the gateway's own client), a new channel each.
        for _ in range(20):
            assert asyncio.run(_grpc_predict(f"127.0.0.1:{grpc_port}")).shape == (1, 3)
        # Every scrape, whichever worker answers it (new connections), counts each request once.
        for _ in range(6):
            page = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            assert scraped(page, "gateway_requests_total", **COUNTED) == sent
            assert scraped(page, "gateway_requests_total", model="mlp", version="2") == 20
            assert scraped(page, "gateway_request_duration_seconds_count", model="mlp", version="1") == sent
            assert scraped(page, "gateway_inflight_requests") == 0
            assert scraped(page, "gateway_model_version_info", model="mlp", label="stable", version="1") == 1
            assert scraped(page, "gateway_backend_up", backend="torchserve") == 1

        # A worker that dies is replaced; what it counted stays counted, once.
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while workers[0] in (now := children(service.proc.pid, 2)) or len(now) < 2:
            assert time.monotonic() < deadline, now
            time.sleep(0.2)
        assert asyncio.run(_send(predict, 50)) == [200] * 50
        settle = time.monotonic() + 5
        while (
            scraped(
                page := httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text, "gateway_requests_total", **COUNTED
            )
            < sent + 50
        ):
            assert time.monotonic() < settle
            time.sleep(0.05)
        assert scraped(page, "gateway_requests_total", **COUNTED) == sent + 50
        workers = now
    finally:
        service.proc.send_signal(signal.SIGTERM)
        service.proc.wait(timeout=60)
        stack.services.pop("two-workers", None)
    assert service.proc.returncode == 0
    assert not [p for p in workers if Path(f"/proc/{p}").exists()]  # the workers stopped with it
