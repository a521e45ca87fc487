"""Reliability end to end: a slow model, a killed backend, SIGTERM under load, the registry going
away. The module runs its own stack (its TorchServe gets killed), with a model that holds each
request until the test releases it: the tests wait on events (an answer came, the listener
closed), not on how long things take on a machine that may be busy."""

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
import json, os, time

RELEASE = {release!r}


class Sleepy:
    """A TorchServe handler that holds each request until the file RELEASE exists (at most 60 s):
    a slow model whose slowness the test controls. Where RELEASE's folder is not visible (the
    backend in a container), it holds each request 2 s instead."""

    def initialize(self, context):
        self.initialized = True

    def handle(self, data, context):
        if os.path.isdir(os.path.dirname(RELEASE)):
            deadline = time.monotonic() + 60
            while not os.path.exists(RELEASE) and time.monotonic() < deadline:
                time.sleep(0.02)
        else:
            time.sleep(2.0)
        return [json.dumps({{"predictions": [[0.0]]}}) for _ in data]
'''


class Gate:
    """Holds or releases the ``sleepy`` model's requests (see ``SLOW_HANDLER``)."""

    def __init__(self, release: Path) -> None:
        self.release_file = release

    def hold(self) -> None:
        self.release_file.unlink(missing_ok=True)

    def release(self) -> None:
        self.release_file.touch()


def build_sleepy(store: Path, scratch: Path) -> Gate:
    """``<store>/sleepy/1/sleepy.mar``: a model whose requests wait on the returned gate."""
    version = store / "sleepy" / "1"
    version.mkdir(parents=True)
    scratch.mkdir(parents=True, exist_ok=True)
    gate = Gate(scratch / "gate" / "release")
    gate.release_file.parent.mkdir()
    gate.release()
    (scratch / "slow_handler.py").write_text(SLOW_HANDLER.format(release=str(gate.release_file)))
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
    return gate


@pytest.fixture(scope="module")
def rel_stack(tmp_path_factory):
    store = copy_store(tmp_path_factory.mktemp("rel-store"), skip=("mlp/3", "cnn/1"))
    gate = build_sleepy(store, tmp_path_factory.mktemp("rel-build"))
    env = {
        "GATEWAY_ADMIN_TOKEN": TOKEN,
        "GATEWAY_TORCHSERVE_TIMEOUT_SECONDS": "1",
        "GATEWAY_BACKEND_MAX_INFLIGHT": "4",
        "GATEWAY_BREAKER_FAILURES": "5",
        "GATEWAY_BREAKER_COOLDOWN_SECONDS": "2",
    }
    with make_stack(store, tmp_path_factory.mktemp("rel-stack"), Ports.free(), gateway_env=env) as running:
        running.gate = gate
        try:
            yield running
        finally:
            gate.release()


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
    fast_url = f"{base}/v1/models/mlp/versions/2:predict"

    async def fast_sequence(session: aiohttp.ClientSession, pause: float = 0.0) -> list:
        await asyncio.sleep(pause)
        return [await _post(session, fast_url, ROW) for _ in range(10)]

    async def run() -> tuple[list, list, list]:
        async with aiohttp.ClientSession() as session:
            baseline = await fast_sequence(session)  # TF Serving's latency on this machine, now
            slow = [_post(session, f"{base}/v1/models/sleepy:predict", {"instances": [[1.0]]}) for _ in range(10)]
            *slow_results, fast = await asyncio.gather(*slow, fast_sequence(session, 0.2))
            return baseline, slow_results, fast

    rel_stack.gate.hold()  # the slow model answers nothing until the test is done
    try:
        baseline, slow, fast = asyncio.run(run())
    finally:
        rel_stack.gate.release()
    timeouts = [r for r in slow if r[0] == 504]
    shed = [r for r in slow if r[0] == 503]
    assert len(timeouts) == 4, slow  # the in-flight cap
    assert len(shed) == 6, slow
    for _status, body, _headers, elapsed in timeouts:
        # The backend had not answered (the gate was shut): only the 1 s deadline could end these.
        assert body["error"] == "torchserve sleepy v1: no answer within the deadline"
        assert elapsed >= 0.9
    for _status, body, headers, _elapsed in shed:
        assert "4 requests already in flight" in body["error"]
        assert headers["Retry-After"] == "1"
    # Refused at once, not queued behind the admitted ones: each before any deadline ran out.
    assert max(r[3] for r in shed) < min(r[3] for r in timeouts)
    assert [r[0] for r in baseline] == [r[0] for r in fast] == [200] * 10  # TF Serving's models are not held up
    # Nor slowed: waiting on the slow model would add its 1 s deadline to a request's own time.
    assert max(r[3] for r in fast) < 1.0 + max(r[3] for r in baseline), (baseline, fast)


def _wait_for(check, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not {what} within {seconds}s")


def _torchserve_answers(base: str) -> bool:
    return httpx.post(f"{base}/v1/models/mlp/versions/1:predict", json=ROW, timeout=30).status_code == 200


def test_killing_torchserve_under_load_answers_every_request_and_recovers(rel_stack):
    base = rel_stack.gateway_url
    # The previous test's circuit must have cooled down: TorchServe's model answers again.
    _wait_for(lambda: _torchserve_answers(base), 60, "answering from TorchServe before the kill")

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
                    results.append((v, *await _post(session, u, ROW, limit=60.0)))

                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)
        return results

    results = asyncio.run(run())
    assert len(results) == 320
    for version, status, body, _, _elapsed in results:
        assert isinstance(status, int), f"request to v{version} got no answer: {status}"
        if version == 2:
            assert status == 200, body
        else:
            assert status in (200, 502, 503, 504), body
            if status != 200:
                assert body["error"].startswith(("torchserve", "deploy")), body
    assert sum(1 for r in results if r[0] == 1 and r[1] == 503) > 0

    rel_stack.restart_torchserve()
    _wait_for(lambda: _torchserve_answers(base), 120, "answering from the restarted TorchServe")
    ready = httpx.get(f"{base}/v2/health/ready").json()
    assert ready["backends"]["torchserve"] == "closed"


CONNECTION_GONE = ("ClientConnectorError", "ClientOSError", "ServerDisconnectedError")


def test_sigterm_finishes_in_flight_requests_and_readiness_drops_first(rel_stack):
    """What a load balancer sees of a gateway told to stop: readiness turns 503 at once; requests
    keep being served through the drain (1.5 s), including one still in flight when the listener
    closes; only then are new connections refused.

    Three clients behave like a load balancer (they stop sending once readiness says 503): none
    of their requests may fail. A straggler ignores readiness and keeps sending until its
    connection is refused, which marks the listener closing; a connection the server accepted
    but had not read a request from when it closed may also be dropped, as any HTTP server does.
    A request to the gated model is sent during the drain and released only after the listener
    closed: it must still be answered."""
    port = free_port()
    env = {"GATEWAY_SHUTDOWN_DRAIN_SECONDS": "1.5", "GATEWAY_TORCHSERVE_TIMEOUT_SECONDS": "120"}
    service = rel_stack.start_gateway_process(port, name="drainer", env=env)
    url = f"http://127.0.0.1:{port}"
    cnn = f"{url}/v1/models/cnn/versions/2:predict"
    body = {"instances": [[[[0.0] * 32] * 32] * 3] * 4}  # cnn v2 (TF Serving), a little work each
    gate = rel_stack.gate

    async def run() -> dict:
        out: dict = {"balanced": [], "straggler": [], "readiness": []}
        flowing, not_ready, closed = asyncio.Event(), asyncio.Event(), asyncio.Event()
        # A new connection per request: a request is either refused or fully in flight, never
        # written onto an idle keep-alive connection at the instant the server closes it.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:

            async def balanced() -> None:
                while not not_ready.is_set():
                    out["balanced"].append((time.monotonic(), *await _post(session, cnn, body, limit=60)))
                    if len(out["balanced"]) >= 6:
                        flowing.set()

            async def straggler() -> None:
                while True:
                    result = (time.monotonic(), *await _post(session, cnn, body, limit=60))
                    out["straggler"].append(result)
                    if result[1] in CONNECTION_GONE:
                        closed.set()
                        return

            async def watch_ready() -> None:
                while not closed.is_set():
                    try:
                        async with session.get(f"{url}/v2/health/ready") as r:
                            status: object = r.status
                    except aiohttp.ClientError as exc:
                        status = type(exc).__name__
                    out["readiness"].append((time.monotonic(), status))
                    if status != 200:
                        not_ready.set()
                    await asyncio.sleep(0.05)

            async def held_request() -> None:
                await not_ready.wait()  # sent during the drain ...
                out["held"] = await _post(session, f"{url}/v1/models/sleepy:predict", {"instances": [[1.0]]}, 60)
                out["held_done"] = time.monotonic()

            tasks = [asyncio.create_task(c()) for c in (balanced, balanced, balanced, straggler, watch_ready)]
            tasks.append(asyncio.create_task(held_request()))
            await asyncio.wait_for(flowing.wait(), 60)
            gate.hold()
            out["sent"] = time.monotonic()
            service.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(closed.wait(), 60)
            out["closed"] = time.monotonic()
            gate.release()  # ... and answered only after the listener closed
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
        return out

    try:
        out = asyncio.run(run())
    finally:
        gate.release()
    service.proc.wait(timeout=60)
    assert service.proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    rel_stack.services.pop("drainer")
    sent, closed = out["sent"], out["closed"]

    assert [r for r in out["balanced"] if r[1] != 200] == []  # nothing a balancer sent was cut
    *served, last = out["straggler"]
    assert [r for r in served if r[1] != 200] == []  # served through the drain ...
    assert closed - sent >= 1.5  # ... which lasts its 1.5 s before the listener closes
    assert last[1] in CONNECTION_GONE

    held = out["held"]
    assert held[0] == 200, held  # sent during the drain, in flight across the close, and finished
    if os.environ.get("GATEWAY_E2E_BACKENDS") != "docker":  # (a container's handler cannot see the gate)
        assert out["held_done"] > closed

    # Readiness dropped first: 503 from some point on, before the listener closed, never 200 again.
    statuses = [status for at, status in out["readiness"] if at > sent]
    first_drop = next(i for i, status in enumerate(statuses) if status != 200)
    assert statuses[first_drop] == 503, statuses
    assert all(status in (503, *CONNECTION_GONE) for status in statuses[first_drop:]), statuses


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


def test_no_token_in_any_log_even_at_debug_level(rel_stack):
    """Admin requests carrying the token (accepted, refused for a bad body), one with a wrong token
    and an inference request with the token as API key, to a gateway logging at debug level: the
    log records each request with its headers (a control: this looks where a leak would show),
    and neither token appears in it or in any other log."""
    port = free_port()
    service = rel_stack.start_gateway_process(port, name="debuglog", env={"GATEWAY_LOG_LEVEL": "debug"})
    url = f"http://127.0.0.1:{port}"
    wrong = "wrong-token-that-must-not-be-logged-0123"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        calls = [
            ("GET", "/admin/models/mlp", auth, None, 200),
            ("PUT", "/admin/models/mlp/shadow", auth, {"version": "two", "percent": 10}, 400),
            ("POST", "/admin/models/mlp/rollback", {"Authorization": f"Bearer {wrong}"}, None, 401),
            ("POST", "/v1/models/mlp:predict", {**auth, "X-API-Key": TOKEN}, ROW, 200),
        ]
        for index, (method, path, headers, body, status) in enumerate(calls):
            rid = f"token-probe-{index}"
            r = httpx.request(method, f"{url}{path}", headers={**headers, "X-Request-ID": rid}, json=body, timeout=30)
            assert r.status_code == status, (path, r.text)
    finally:
        rel_stack.services.pop("debuglog").stop()
    text = service.log_path.read_text(errors="replace")
    for index in range(len(calls)):  # each request is in the log, with its headers, the tokens redacted
        (line,) = [line for line in text.splitlines() if f"[token-probe-{index}]" in line and "headers:" in line]
        assert "'authorization': [redacted]" in line, line
    logs = list(Path(rel_stack.workdir).rglob("*.log"))
    assert service.log_path in logs
    for log in logs:
        content = log.read_text(errors="replace")
        assert TOKEN not in content, log
        assert wrong not in content, log


def test_sigterm_drains_the_in_flight_requests_of_every_worker(rel_stack, tmp_path):
    """With two workers, SIGTERM to the gateway reaches both: requests in flight on each (held by
    the gated model) are all answered after the listeners closed, and the gateway exits 0."""
    from tests.e2e.workers import children, worker_value

    metrics_dir = tmp_path / "prometheus"
    port = free_port()
    env = {
        "GATEWAY_WORKERS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "GATEWAY_SHUTDOWN_DRAIN_SECONDS": "1",
        "GATEWAY_TORCHSERVE_TIMEOUT_SECONDS": "120",
        "GATEWAY_BACKEND_MAX_INFLIGHT": "64",
    }
    service = rel_stack.start_gateway_process(port, name="drain-workers", env=env)
    url = f"http://127.0.0.1:{port}"
    workers = children(service.proc.pid, 2)
    assert len(workers) == 2, workers
    gate = rel_stack.gate

    def inflight(pid: int) -> float:
        return worker_value(metrics_dir, pid, "gateway_inflight_requests")

    async def run() -> tuple[list[tuple], float]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            sleepy = f"{url}/v1/models/sleepy:predict"
            # The second worker listens a moment after the first: wait until it serves.
            deadline = time.monotonic() + 60
            while inflight(workers[1]) == 0 or inflight(workers[0]) == 0:
                assert time.monotonic() < deadline, [inflight(p) for p in workers]
                gate.hold()
                held = [asyncio.create_task(_post(session, sleepy, {"instances": [[1.0]]}, 120)) for _ in range(16)]
                await asyncio.sleep(1.0)
                if inflight(workers[1]) > 0 and inflight(workers[0]) > 0:
                    break
                gate.release()
                await asyncio.gather(*held)
            service.proc.send_signal(signal.SIGTERM)
            # The listeners close once both drained (1 s): new connections are refused.
            while (await _post(session, f"{url}/v2/health/live", None, 5))[0] not in CONNECTION_GONE:
                assert time.monotonic() < deadline + 60, "the listeners never closed"
                await asyncio.sleep(0.05)
            closed = time.monotonic()
            gate.release()
            return await asyncio.gather(*held), closed

    try:
        answers, _ = asyncio.run(run())
    finally:
        gate.release()
    service.proc.wait(timeout=60)
    rel_stack.services.pop("drain-workers")
    assert [a[0] for a in answers] == [200] * len(answers), answers
    assert service.proc.returncode == 0
    assert not [p for p in workers if Path(f"/proc/{p}").exists()]
