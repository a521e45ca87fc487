"""Reliability end to end: a slow model, a killed backend, SIGTERM under load, the registry going
away. The module runs its own stack (its TorchServe gets killed), with a model that sleeps."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import pytest
from localstack import Ports, free_port

from tests.deploy.docker_stack import make_stack
from tests.e2e.conftest import copy_store
from tests.pgfixtures import fresh_postgres_url  # noqa: F401  (fixture)
from tests.registry.tcpproxy import TcpProxy

TOKEN = "reliability-token-0123456789abcdef"
ROW = {"instances": [[0.1, 0.2, 0.3, 0.4]]}
SLOW_HANDLER = '''
import json, time


class Sleepy:
    """A TorchServe handler that takes 2 s per request: a slow model, for deadline tests."""

    def initialize(self, context):
        self.initialized = True

    def handle(self, data, context):
        time.sleep(2.0)
        return [json.dumps({"predictions": [[0.0]]}) for _ in data]
'''


def build_sleepy(store: Path, scratch: Path) -> None:
    """``<store>/sleepy/1/sleepy.mar``: a model whose handler sleeps 2 s, with its signature."""
    version = store / "sleepy" / "1"
    version.mkdir(parents=True)
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "slow_handler.py").write_text(SLOW_HANDLER)
    # torch-model-archiver stages files in $TMPDIR/<model name> and deletes it: a private TMPDIR.
    env = {**os.environ, "TMPDIR": str(scratch)}
    archiver = Path(sys.executable).with_name("torch-model-archiver")
    subprocess.run(
        [str(archiver), "--model-name", "sleepy", "--version", "1", "--handler", "slow_handler.py",
         "--export-path", str(version), "--force"],
        cwd=scratch, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    signature = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
    }
    (version / "signature.json").write_text(json.dumps(signature))


@pytest.fixture(scope="module")
def rel_stack(tmp_path_factory):
    store = copy_store(tmp_path_factory.mktemp("rel-store"), skip=("mlp/3", "cnn/1"))
    build_sleepy(store, tmp_path_factory.mktemp("rel-build"))
    env = {
        "GATEWAY_ADMIN_TOKEN": TOKEN,
        "GATEWAY_TORCHSERVE_TIMEOUT_SECONDS": "1",
        "GATEWAY_BACKEND_MAX_INFLIGHT": "4",
        "GATEWAY_BREAKER_FAILURES": "5",
        "GATEWAY_BREAKER_COOLDOWN_SECONDS": "2",
    }
    with make_stack(store, tmp_path_factory.mktemp("rel-stack"), Ports.free(), gateway_env=env) as running:
        yield running


async def _post(session: aiohttp.ClientSession, url: str, body: object, limit: float = 10.0) -> tuple:
    start = time.monotonic()
    try:
        async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=limit)) as r:
            payload = await r.json(content_type=None)
            return r.status, payload, dict(r.headers), time.monotonic() - start
    except Exception as exc:
        return type(exc).__name__, None, {}, time.monotonic() - start


def test_a_slow_model_gets_504_at_the_deadline_and_the_excess_503_while_others_stay_fast(rel_stack):
    base = rel_stack.gateway_url

    async def run() -> tuple[list, list]:
        async with aiohttp.ClientSession() as session:
            slow = [_post(session, f"{base}/v1/models/sleepy:predict", {"instances": [[1.0]]}) for _ in range(10)]

            async def fast_sequence() -> list:
                await asyncio.sleep(0.2)
                return [await _post(session, f"{base}/v1/models/mlp/versions/2:predict", ROW) for _ in range(10)]

            *slow_results, fast = await asyncio.gather(*slow, fast_sequence())
            return slow_results, fast

    slow, fast = asyncio.run(run())
    timeouts = [r for r in slow if r[0] == 504]
    shed = [r for r in slow if r[0] == 503]
    assert len(timeouts) == 4, slow  # the in-flight cap
    assert len(shed) == 6, slow
    for _status, body, _headers, elapsed in timeouts:
        assert body["error"] == "torchserve sleepy v1: no answer within the deadline"
        assert 0.9 < elapsed < 2.5
    for _status, body, headers, elapsed in shed:
        assert "4 requests already in flight" in body["error"]
        assert headers["Retry-After"] == "1"
        assert elapsed < 0.5
    assert [r[0] for r in fast] == [200] * 10  # TF Serving's models are not held up
    assert max(r[3] for r in fast) < 0.5


def _wait_for(check, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not {what} within {seconds}s")


def test_killing_torchserve_under_load_answers_every_request_and_recovers(rel_stack):
    base = rel_stack.gateway_url
    time.sleep(2.5)  # let the previous test's circuit cool down

    async def run() -> list:
        results = []
        async with aiohttp.ClientSession() as session:
            tasks = []
            begin = time.monotonic()
            for i in range(320):  # 40 requests/s for 8 s, alternating the stacks
                delay = begin + i / 40 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if i == 80:  # after 2 s: kill TorchServe, Java frontend and workers
                    os.killpg(rel_stack.services["torchserve"].proc.pid, signal.SIGKILL)
                version = 1 if i % 2 == 0 else 2
                url = f"{base}/v1/models/mlp/versions/{version}:predict"

                async def one(v: int = version, u: str = url) -> None:
                    results.append((v, *await _post(session, u, ROW, limit=5.0)))

                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)
        return results

    results = asyncio.run(run())
    assert len(results) == 320
    for version, status, body, _, elapsed in results:
        assert isinstance(status, int), f"request to v{version} got no answer: {status}"
        assert elapsed < 3.0
        if version == 2:
            assert status == 200, body
        else:
            assert status in (200, 502, 503, 504), body
            if status != 200:
                assert body["error"].startswith(("torchserve", "deploy")), body
    assert sum(1 for r in results if r[0] == 1 and r[1] == 503) > 0

    rel_stack.restart_torchserve()

    def healthy() -> bool:
        return httpx.post(f"{base}/v1/models/mlp/versions/1:predict", json=ROW).status_code == 200

    _wait_for(healthy, 30, "answering from the restarted TorchServe")
    ready = httpx.get(f"{base}/v2/health/ready").json()
    assert ready["backends"]["torchserve"] == "closed"


def test_sigterm_finishes_in_flight_requests_and_readiness_drops_first(rel_stack):
    port = free_port()
    service = rel_stack.start_gateway_process(port, name="drainer", env={"GATEWAY_SHUTDOWN_DRAIN_SECONDS": "1.5"})
    url = f"http://127.0.0.1:{port}"
    body = {"instances": [[[[0.0] * 32] * 32] * 3] * 4}  # cnn v2 (TF Serving), a little work each

    async def run() -> tuple[list, list, float]:
        results: list = []
        readiness: list = []
        # A new connection per request: a request is either refused or fully in flight, never
        # written onto an idle keep-alive connection at the instant the server closes it.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:

            async def client() -> None:
                while time.monotonic() < stop_at:
                    results.append(
                        (time.monotonic(), *await _post(session, f"{url}/v1/models/cnn/versions/2:predict", body))
                    )

            async def watch_ready() -> None:
                while time.monotonic() < stop_at:
                    try:
                        async with session.get(f"{url}/v2/health/ready") as r:
                            status: object = r.status
                    except aiohttp.ClientError as exc:
                        status = type(exc).__name__
                    readiness.append((time.monotonic(), status))
                    await asyncio.sleep(0.05)

            stop_at = time.monotonic() + 4.0
            tasks = [asyncio.create_task(client()) for _ in range(3)] + [asyncio.create_task(watch_ready())]
            await asyncio.sleep(1.0)
            sent = time.monotonic()
            service.proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*tasks)
        return results, readiness, sent

    results, readiness, sent = asyncio.run(run())
    service.proc.wait(timeout=30)
    assert service.proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    rel_stack.services.pop("drainer")
    # Nothing that reached the gateway was cut: every answer is a 200, and the only failures are
    # connections refused once the listener had closed, after the drain.
    # A connection still in the kernel's accept queue when the listener closes is reset
    # (ClientOSError): the request never reached the gateway, like a refused connection.
    odd = [
        (round(r[0] - sent, 3), r[1])
        for r in results
        if r[1] != 200 and not (r[1] in ("ClientConnectorError", "ClientOSError") and r[0] > sent + 1.4)
    ]
    assert not odd, odd
    refused = [r for r in results if r[1] in ("ClientConnectorError", "ClientOSError")]
    assert refused and min(r[0] for r in refused) > sent + 1.0
    assert sum(1 for r in results if r[1] == 200 and r[0] > sent) > 0  # served while draining
    after = [status for at, status in readiness if at > sent + 0.2]
    assert after and after[0] in (503, "ClientConnectorError")  # readiness dropped first
    assert 503 in after


def test_inference_keeps_answering_while_the_registry_is_down(rel_stack, fresh_postgres_url):  # noqa: F811
    host_port = fresh_postgres_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    proxy = TcpProxy((host, int(port)))
    proxied = fresh_postgres_url.replace(host_port, f"127.0.0.1:{proxy.port}")
    gw_port = free_port()
    env = {"GATEWAY_DATABASE_URL": proxied, "GATEWAY_REGISTRY_POLL_SECONDS": "0.25"}
    rel_stack.start_gateway_process(gw_port, name="regdown", env=env)
    url = f"http://127.0.0.1:{gw_port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        proxy.cut()
        for _ in range(20):
            r = httpx.post(f"{url}/v1/models/mlp:predict", json=ROW)
            assert r.status_code == 200
        r = httpx.put(f"{url}/admin/models/mlp/shadow", json={"version": 2, "percent": 10}, headers=auth, timeout=30)
        assert r.status_code == 503, r.text
        assert r.json()["error"].startswith("registry unavailable, nothing was changed")
        assert "is unavailable" in r.json()["error"]
        proxy.restore()

        def write_works() -> bool:
            shadow = {"version": 2, "percent": 10}
            return httpx.put(f"{url}/admin/models/mlp/shadow", json=shadow, headers=auth, timeout=30).status_code == 200

        _wait_for(write_works, 20, "accepting admin writes after the registry came back")
    finally:
        rel_stack.services.pop("regdown").stop()
        proxy.close()


def test_no_token_in_any_log(rel_stack):
    logs = list(Path(rel_stack.workdir).rglob("*.log"))
    assert logs
    for log in logs:
        assert TOKEN not in log.read_text(errors="replace"), log
