"""Rollouts end to end: real TorchServe, the TF Serving-compatible server, real PostgreSQL, the
gateway as its own process, and the ``gateway`` CLI as a user runs it.

The module starts its own stack whose model store lacks ``mlp`` version 3, so that the tests can
deploy it. Tests run in file order and build on each other's state, as an operator's session does.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from localstack import Ports, free_port

from gateway.app import create_app
from gateway.settings import Settings
from tests.deploy.docker_stack import make_stack
from tests.e2e.conftest import STORE, copy_store
from tests.pgfixtures import postgres_url  # noqa: F401  (fixture)

TOKEN = "e2e-admin-token-0123456789abcdef"
READ_TOKEN = "e2e-read-token-0123456789abcdef"
ROW = {"instances": [[0.5, -1.0, 0.25, 2.0]]}


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> Iterator[str]:
    """A plain HTTP server of release tarballs (``mlp-2.tar.gz``: mlp version 2's directory); its URL."""
    root = tmp_path_factory.mktemp("releases")
    with tarfile.open(root / "mlp-2.tar.gz", "w:gz") as tar:
        tar.add(STORE / "mlp" / "2", arcname="mlp-2")
    handler = functools.partial(QuietFiles, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/releases/"
    server.shutdown()
    server.server_close()


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def translate_path(self, path: str) -> str:
        return super().translate_path(path.removeprefix("/releases"))

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def rollout_stack(tmp_path_factory, postgres_url, releases):  # noqa: F811
    store = copy_store(tmp_path_factory.mktemp("rollout-store"), skip=("mlp/3",))
    workdir = tmp_path_factory.mktemp("rollout-stack")
    env = {
        "GATEWAY_DATABASE_URL": postgres_url,
        "GATEWAY_ADMIN_TOKEN": TOKEN,
        "GATEWAY_READ_TOKEN": READ_TOKEN,
        "GATEWAY_LOG_LEVEL": "info",
        "GATEWAY_ARTIFACT_URL_PREFIXES": releases,
        "GATEWAY_BACKEND_PROBE_SECONDS": "1",
    }
    with make_stack(store, workdir, Ports.free(), gateway_env=env) as running:
        running.postgres_url = postgres_url
        yield running


@pytest.fixture(scope="module")
def gw(rollout_stack):
    with httpx.Client(base_url=rollout_stack.gateway_url, timeout=60) as client:
        yield client


def cli(stack, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    """Run the ``gateway`` CLI as a user would, against the stack's gateway."""
    env = {**os.environ, "GATEWAY_ADMIN_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--url", stack.gateway_url, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def admin(gw, method: str, path: str, **kwargs):
    return gw.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs)


def history(gw, model: str = "mlp") -> list[dict]:
    return admin(gw, "GET", f"/admin/history?model={model}").json()["history"]


def expected(version: int) -> list:
    return json.loads((STORE / "mlp" / str(version) / "sample_output.json").read_text())["predictions"]


def sample() -> dict:
    return json.loads((STORE / "mlp" / "1" / "sample_input.json").read_text())


async def _spread(url: str, n: int, concurrency: int = 8) -> Counter[str]:
    seen: Counter[str] = Counter()
    body = json.dumps(ROW).encode()
    async with aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem, session.post(url, data=body) as r:
                assert r.status == 200, await r.text()
                seen[r.headers["X-Model-Version"]] += 1

        await asyncio.gather(*(one() for _ in range(n)))
    return seen


def test_start_up_adopts_the_store_with_the_example_state(gw):
    status = admin(gw, "GET", "/admin/models/mlp").json()["models"][0]
    assert status["labels"] == {"stable": 1}
    assert [(v["version"], v["backend"], v["backend_state"]) for v in status["versions"]] == [
        (1, "torchserve", "AVAILABLE"),
        (2, "tfserving", "AVAILABLE"),
    ]
    adopted = admin(gw, "GET", "/admin/history").json()["history"][-1]
    assert (adopted["action"], adopted["actor"], adopted["outcome"]) == ("adopt", "gateway", "ok")


def test_deploy_as_canary_then_promote_then_roll_back(rollout_stack, gw):
    done = cli(rollout_stack, "deploy", "mlp", str(STORE / "mlp" / "3"), "--canary", "10")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "model": "mlp",
        "version": 3,
        "backend": "torchserve",
        "status": "deployed",
        "canary": 10.0,
    }
    assert (rollout_stack.store / "mlp" / "3" / "mlp.mar").is_file()

    seen = asyncio.run(_spread(f"{rollout_stack.gateway_url}/v1/models/mlp:predict", 2000))
    assert set(seen) == {"1", "3"}
    assert 0.07 <= seen["3"] / 2000 <= 0.13, seen

    r = gw.post("/v1/models/mlp/labels/canary:predict", json=sample())
    assert r.headers["X-Model-Version"] == "3"
    np.testing.assert_allclose(r.json()["predictions"], expected(3), atol=1e-6)

    promoted = cli(rollout_stack, "promote", "mlp")
    assert promoted.returncode == 0, promoted.stderr
    for _ in range(20):
        r = gw.post("/v1/models/mlp:predict", json=sample())
        assert (r.headers["X-Model-Version"], r.headers["X-Model-Label"]) == ("3", "stable")
    np.testing.assert_allclose(r.json()["predictions"], expected(3), atol=1e-6)

    rolled = cli(rollout_stack, "rollback", "mlp")
    assert rolled.returncode == 0, rolled.stderr
    assert json.loads(rolled.stdout) == {"model": "mlp", "stable": 1, "previous": 3}
    r = gw.post("/v1/models/mlp:predict", json=sample())
    assert r.headers["X-Model-Version"] == "1"
    np.testing.assert_allclose(r.json()["predictions"], expected(1), atol=1e-6)
    actions = [(h["action"], h["actor"], h["outcome"]) for h in history(gw)[:3]]
    assert actions == [("rollback", "admin", "ok"), ("promote", "admin", "ok"), ("deploy", "admin", "ok")]


def test_deploying_the_same_version_again_is_harmless(rollout_stack, gw):
    before = admin(gw, "GET", "/admin/models/mlp").json()
    again = cli(rollout_stack, "deploy", "mlp", str(STORE / "mlp" / "3"))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "unchanged"
    after = admin(gw, "GET", "/admin/models/mlp").json()
    assert after["models"][0]["labels"] == before["models"][0]["labels"]


async def _load_during(url: str, rps: int, seconds: float, action, after: int = 0) -> tuple[list, tuple[float, float]]:
    """Open-loop load at ``rps`` for ``seconds``, and on until the action is done and ``after``
    more requests were sent (a slow action on a busy machine stretches the run, never shortens
    what is checked); ``action`` starts in the middle. Returns each request's (start, end, status,
    version, label) and the action's (start, end)."""
    results: list = []
    body = json.dumps(ROW).encode()
    window: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:

        async def one() -> None:
            start = time.monotonic()
            try:
                async with session.post(url, data=body, timeout=aiohttp.ClientTimeout(total=10)) as r:
                    await r.read()
                    results.append(
                        (
                            start,
                            time.monotonic(),
                            r.status,
                            r.headers.get("X-Model-Version"),
                            r.headers.get("X-Model-Label"),
                        )
                    )
            except Exception as exc:  # counted as a failure below
                results.append((start, time.monotonic(), repr(exc), None, None))

        async def act() -> None:
            await asyncio.sleep(seconds / 2)
            window.append(time.monotonic())
            await asyncio.to_thread(action)
            window.append(time.monotonic())

        tasks = [asyncio.create_task(act())]
        begin = time.monotonic()
        i = sent_after = 0
        while i < int(rps * seconds) or len(window) < 2 or sent_after < after:
            delay = begin + i / rps - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(window) == 2:
                sent_after += 1
            tasks.append(asyncio.create_task(one()))
            i += 1
        await asyncio.gather(*tasks)
    return results, (window[0], window[1])


def test_rollback_under_load_fails_no_request(rollout_stack, gw):
    assert cli(rollout_stack, "promote", "mlp", "3").returncode == 0
    results, (t0, t1) = asyncio.run(
        _load_during(
            f"{rollout_stack.gateway_url}/v1/models/mlp:predict",
            rps=120,
            seconds=10,
            action=lambda: cli(rollout_stack, "rollback", "mlp"),
            after=100,
        )
    )
    assert len(results) >= 1200
    failures = [r for r in results if r[2] != 200]
    assert failures == []
    for start, end, _, version, label in results:
        assert label == "stable"
        if end < t0:
            assert version == "3"  # answered before the rollback began
        elif start > t1:
            assert version == "1"  # routed after the rollback was done
        else:
            assert version in ("1", "3")
    assert sum(1 for r in results if r[0] > t1) > 100


def _shadow_results(gw, version: int, requests: int) -> dict:
    """The shadow results for ``version`` once all ``requests`` copies have finished (a 60 s ceiling)."""
    deadline = time.monotonic() + 60
    while True:
        results = admin(gw, "GET", "/admin/models/mlp").json()["models"][0]["shadow_results"]
        found = next((r for r in results if r["shadow_version"] == version), None)
        done = found is not None and found["compared"] + found["errors"] + found["dropped"] >= requests
        if done or time.monotonic() > deadline:
            return found or {}
        time.sleep(0.1)


def test_shadow_across_stacks_records_agreement_and_disagreement(rollout_stack, gw):
    rng = np.random.default_rng(5)
    body = lambda: {"instances": rng.normal(size=(8, 4)).tolist()}  # noqa: E731
    assert cli(rollout_stack, "shadow", "mlp", "2", "--percent", "100").returncode == 0
    for _ in range(30):
        r = gw.post("/v1/models/mlp:predict", json=body())
        assert r.status_code == 200 and r.headers["X-Model-Version"] == "1"
    v2 = _shadow_results(gw, 2, 30)
    # A copy that finds the shadow budget spent is dropped, never queued: on a busy machine a few are.
    assert v2["compared"] + v2["dropped"] == 30 and v2["compared"] >= 10, json.dumps(v2)
    assert (v2["agreements"], v2["disagreements"], v2["errors"]) == (v2["compared"], 0, 0), json.dumps(v2)
    assert v2["max_abs_diff"] < 1e-5

    assert cli(rollout_stack, "shadow", "mlp", "3", "--percent", "100").returncode == 0
    for _ in range(30):
        gw.post("/v1/models/mlp:predict", json=body())
    v3 = _shadow_results(gw, 3, 30)
    assert v3["compared"] + v3["dropped"] == 30 and v3["compared"] >= 10, json.dumps(v3)
    assert v3["disagreements"] > 0 and v3["max_abs_diff"] > 1e-2
    off = cli(rollout_stack, "shadow", "mlp", "--off")
    assert off.returncode == 0, off.stderr


def _routing(gw) -> dict:
    model = admin(gw, "GET", "/admin/models/mlp").json()["models"][0]
    return {
        "labels": model["labels"],
        "traffic": model["traffic"],
        "versions": [v["version"] for v in model["versions"]],
    }


def _built_version(tmp: Path, number: int, backend: str, seed: int) -> Path:
    """Build a new mlp version with the example builder, in a subprocess (torch stays out of here)."""
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, 'deploy')\n"
        "from examples.build_models import MLP, Version, build_version\n"
        f"build_version(Path({str(tmp)!r}), Version(MLP, {number}, {backend!r}, seed={seed}))\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, capture_output=True, timeout=300)
    return tmp / "mlp" / str(number)


def test_failed_deploys_leave_routing_unchanged_and_say_which_step(rollout_stack, gw, tmp_path):
    before = _routing(gw)

    broken = tmp_path / "broken" / "4"
    broken.mkdir(parents=True)
    (broken / "mlp.mar").write_bytes(b"this is not a zip archive")
    shutil.copy(STORE / "mlp" / "1" / "signature.json", broken)
    done = cli(rollout_stack, "deploy", "mlp", str(broken), "--version", "4")
    assert done.returncode == 1
    assert "deploy failed at step 'validate': mlp.mar is not a valid model archive" in done.stderr

    good = _built_version(tmp_path / "built", 4, "torchserve", seed=7)
    wrong = json.loads((good / "sample_output.json").read_text())
    wrong["predictions"][0][0] += 0.5
    (good / "sample_output.json").write_text(json.dumps(wrong))
    done = cli(rollout_stack, "deploy", "mlp", str(good))
    assert done.returncode == 1
    assert "deploy failed at step 'smoke': output 'probabilities' differs from sample_output.json by 0.5" in done.stderr
    assert not (rollout_stack.store / "mlp" / "4").exists()
    r = httpx.get(f"{rollout_stack.torchserve_management_url}/models/mlp/4")
    assert r.status_code == 404, "the failed version must be unloaded from TorchServe"

    assert _routing(gw) == before
    failed = [h for h in history(gw)[:2]]
    assert [(h["action"], h["outcome"], h["detail"]["step"]) for h in failed] == [
        ("deploy", "failed", "smoke"),
        ("deploy", "failed", "validate"),
    ]


def test_deploy_with_the_backend_down_fails_at_load(rollout_stack, gw, tmp_path):
    good = _built_version(tmp_path / "built", 5, "torchserve", seed=8)
    settings = Settings(
        model_store=rollout_stack.store,
        database_url=rollout_stack.postgres_url,
        torchserve_url=f"http://127.0.0.1:{free_port()}",
        torchserve_management_url=f"http://127.0.0.1:{free_port()}",
        tfserving_target=rollout_stack.tfserving_target,
        admin_token=TOKEN,
    )
    before = _routing(gw)
    with TestClient(create_app(settings)) as client:
        from gateway.cli import tar_stream

        r = client.post(
            "/admin/models/mlp/deploy",
            content=b"".join(tar_stream(good)),
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert r.status_code == 503, r.text
    assert r.json()["error"].startswith("deploy failed at step 'load': torchserve management API: cannot connect")
    assert not (rollout_stack.store / "mlp" / "5").exists()
    assert _routing(gw) == before
    assert history(gw)[0]["detail"]["step"] == "load"


def test_a_second_replica_follows_a_rollback(rollout_stack, gw):
    # How soon is the watcher's business (tests/registry/test_watch.py); here: it follows at all,
    # through the registry alone, and never goes back.
    assert cli(rollout_stack, "promote", "mlp", "3").returncode == 0
    port = free_port()
    rollout_stack.start_gateway_process(port, name="replica")
    other = f"http://127.0.0.1:{port}/v1/models/mlp:predict"
    try:
        assert httpx.post(other, json=ROW).headers["X-Model-Version"] == "3"
        assert cli(rollout_stack, "rollback", "mlp").returncode == 0
        deadline = time.monotonic() + 30  # a ceiling for a broken build, not a latency claim
        while httpx.post(other, json=ROW, timeout=30).headers["X-Model-Version"] != "1":
            assert time.monotonic() < deadline, "the replica did not follow the rollback"
            time.sleep(0.02)
        assert {httpx.post(other, json=ROW, timeout=30).headers["X-Model-Version"] for _ in range(10)} == {"1"}
    finally:
        rollout_stack.services.pop("replica").stop()


def test_state_and_history_survive_a_restart(rollout_stack, gw):
    assert (
        cli(rollout_stack, "traffic", "mlp", "--canary", "3", "--percent", "25", "--sticky-header", "X-User").returncode
        == 0
    )
    assert cli(rollout_stack, "shadow", "mlp", "2", "--percent", "50").returncode == 0
    before = admin(gw, "GET", "/admin/models/mlp").json()["models"][0]
    before_history = history(gw)
    rollout_stack.services.pop("gateway").stop()
    rollout_stack.start_gateway_process()
    after = admin(gw, "GET", "/admin/models/mlp").json()["models"][0]
    for key in ("labels", "traffic", "shadow", "stable_history"):
        assert after[key] == before[key], key
    assert history(gw) == before_history


def test_read_only_token_cannot_write_and_no_token_is_401(rollout_stack, gw):
    r = gw.post("/admin/models/mlp/rollback")
    assert r.status_code == 401
    done = cli(rollout_stack, "rollback", "mlp", token=READ_TOKEN)
    assert done.returncode == 1
    assert "403: token 'reader' is read-only" in done.stderr
    assert cli(rollout_stack, "status", "mlp", token=READ_TOKEN).returncode == 0


def test_deploy_from_an_allow_listed_url_and_not_from_elsewhere(rollout_stack, gw, releases):
    done = cli(rollout_stack, "deploy", "mlp", releases + "mlp-2.tar.gz?token=signed-s3cr3t", "--version", "4")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "deployed"
    r = gw.post("/v1/models/mlp/versions/4:predict", json=sample())
    assert r.status_code == 200 and r.headers["X-Backend"] == "tfserving"
    np.testing.assert_allclose(r.json()["predictions"], expected(2), atol=1e-5)
    assert history(gw)[0]["detail"]["source"] == releases + "mlp-2.tar.gz"
    elsewhere = releases.replace("/releases/", "/private/") + "mlp-2.tar.gz"
    done = cli(rollout_stack, "deploy", "mlp", elsewhere, "--version", "5")
    assert done.returncode == 1
    assert "403: deploy failed at step 'fetch'" in done.stderr and "not under an allow-listed prefix" in done.stderr
    assert admin(gw, "GET", "/admin/models/mlp").json()["models"][0]["labels"].get("canary") != 5
    assert "s3cr3t" not in json.dumps(history(gw))


def test_backends_that_restart_get_the_deployed_versions_back(rollout_stack, gw):
    if not hasattr(rollout_stack, "restart_tfserving") or os.environ.get("GATEWAY_E2E_BACKENDS") == "docker":
        pytest.skip("restarts the local backends' processes")
    # Versions 3 (TorchServe) and 4 (TF Serving) came through the gateway: neither backend's
    # start-up configuration knows them.
    rollout_stack.restart_tfserving()
    rollout_stack.restart_torchserve()
    deadline = time.monotonic() + 60
    for version, backend in ((4, "tfserving"), (3, "torchserve")):
        while (r := gw.post(f"/v1/models/mlp/versions/{version}:predict", json=sample())).status_code != 200:
            assert time.monotonic() < deadline, f"version {version} not back on {backend}: {r.status_code} {r.text}"
            time.sleep(0.5)
        assert r.headers["X-Backend"] == backend
    np.testing.assert_allclose(r.json()["predictions"], expected(3), atol=1e-5)


def _torchserve_versions(stack, model: str) -> set[str]:
    r = httpx.get(f"{stack.torchserve_management_url}/models/{model}/all")
    return {entry["modelVersion"] for entry in r.json()} if r.status_code == 200 else set()


def _tfserving_available(stack, model: str) -> set[int]:
    r = httpx.get(f"{stack.tfserving_rest_url}/v1/models/{model}")
    if r.status_code != 200:
        return set()
    return {int(s["version"]) for s in r.json()["model_version_status"] if s["state"] == "AVAILABLE"}


def test_backends_restarted_after_a_retire_load_exactly_the_registry_versions(rollout_stack, gw, tmp_path):
    """A restart brings back what the registry has available, and nothing it retired: what each
    backend loads at start is the start-up file the gateway rewrites on every change."""
    if not hasattr(rollout_stack, "restart_tfserving") or os.environ.get("GATEWAY_E2E_BACKENDS") == "docker":
        pytest.skip("restarts the local backends' processes")
    built = _built_version(tmp_path / "built", 6, "torchserve", seed=9)
    done = cli(rollout_stack, "deploy", "mlp", str(built))
    assert done.returncode == 0, done.stderr
    for model, version in (("mlp", 6), ("cnn", 2)):  # one version of each stack
        done = cli(rollout_stack, "retire", model, str(version))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["unloaded"] is True
    registry = {
        model["model"]: {v["version"]: v["backend"] for v in model["versions"] if v["state"] == "available"}
        for model in admin(gw, "GET", "/admin/models").json()["models"]
    }

    rollout_stack.restart_tfserving()
    rollout_stack.restart_torchserve()

    for model, versions in registry.items():
        on_ts = {str(v) for v, backend in versions.items() if backend == "torchserve"}
        on_tf = {v for v, backend in versions.items() if backend == "tfserving"}
        assert _torchserve_versions(rollout_stack, model) == on_ts, model
        assert _tfserving_available(rollout_stack, model) == on_tf, model
    assert 6 not in registry["mlp"] and 2 not in registry["cnn"]
    stable = admin(gw, "GET", "/admin/models/mlp").json()["models"][0]["labels"]["stable"]
    if registry["mlp"][stable] == "torchserve":  # TorchServe's default is the stable version
        default = httpx.get(f"{rollout_stack.torchserve_management_url}/models/mlp").json()[0]["modelVersion"]
        assert default == str(stable)


def test_retire_after_two_promotes_unregisters_the_version_from_torchserve(rollout_stack, gw):
    # TorchServe made version 1 its default when it registered it first (again after the restart
    # above) and refuses to unregister its default: the gateway moves the default first.
    for version in ("3", "2"):
        done = cli(rollout_stack, "promote", "mlp", version)
        assert done.returncode == 0, done.stderr
    retired = cli(rollout_stack, "retire", "mlp", "1")
    assert retired.returncode == 0, retired.stderr
    assert json.loads(retired.stdout) == {"model": "mlp", "version": 1, "retired": True, "unloaded": True}
    listed = httpx.get(f"{rollout_stack.torchserve_management_url}/models/mlp/all").json()
    assert "1" not in [entry["modelVersion"] for entry in listed] and "3" in [e["modelVersion"] for e in listed]
    assert httpx.get(f"{rollout_stack.torchserve_management_url}/models/mlp/1").status_code == 404
    r = gw.post("/v1/models/mlp:predict", json=sample())
    assert (r.status_code, r.headers["X-Model-Version"]) == (200, "2")
