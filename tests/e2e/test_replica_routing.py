"""Issue 15's acceptance, end to end: two replicas of each stack (real TorchServe processes, real
TF Serving-compatible servers), each with its own agent and replica-local storage, artifacts in a
real S3-compatible server, the registry in PostgreSQL, and one gateway that routes over the
replicas (GATEWAY_AGENT_STACKS). The tests run in order on one fleet: spread, deploy, a replica
failing to load, a replica killed under load, a replica added under load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest
from localstack import LocalStack, Ports

from tests.e2e.agent_stack import sample
from tests.e2e.conftest import STORE, copy_store
from tests.e2e.fleet import Fleet, Load, replica_calls
from tests.pgfixtures import create_database, drop_database
from tests.s3fixtures import CREDENTIALS, moto_endpoint  # noqa: F401  (fixture)

BUCKET = "fleet-artifacts"
TIMEOUT = 10.0  # the gateway's deadline for one backend call


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, moto_endpoint):  # noqa: F811
    assert httpx.put(f"{moto_endpoint}/{BUCKET}").status_code == 200
    url = create_database()
    artifacts = {"GATEWAY_ARTIFACT_STORE": "s3", "GATEWAY_ARTIFACT_S3_ENDPOINT": moto_endpoint,
                 "GATEWAY_ARTIFACT_S3_BUCKET": BUCKET, "GATEWAY_ARTIFACT_S3_PREFIX": "models", **CREDENTIALS}  # fmt: skip
    fleet = Fleet(tmp_path_factory.mktemp("fleet"), url, artifacts)
    store = copy_store(tmp_path_factory.mktemp("fleet-store"), skip=("mlp/3",))
    gateway = LocalStack(store, tmp_path_factory.mktemp("fleet-gateway"), Ports.free(), start_gateway=False,
                         gateway_env={**fleet.env, "GATEWAY_AGENT_STACKS": "torchserve,tfserving",
                                      "GATEWAY_REPLICA_TTL_SECONDS": "4", "GATEWAY_REPLICA_POLL_SECONDS": "0.5",
                                      "GATEWAY_TORCHSERVE_TIMEOUT_SECONDS": str(TIMEOUT),
                                      "GATEWAY_TFSERVING_TIMEOUT_SECONDS": str(TIMEOUT)})  # fmt: skip
    try:
        gateway.start_gateway_process()  # adopts the store into the empty registry, stores the artifacts
        starting = [threading.Thread(target=fleet.add, args=(rid, kind))
                    for rid, kind in (("ts-0", "torchserve"), ("ts-1", "torchserve"),
                                      ("tf-0", "tfserving"), ("tf-1", "tfserving"))]  # fmt: skip
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        assert len(fleet.members) == 4, "a replica did not start (see the log above)"
        fleet.wait_ready(["ts-0", "ts-1"], "mlp", 1)
        fleet.wait_ready(["tf-0", "tf-1"], "mlp", 2)
        yield fleet, gateway
    finally:
        gateway.stop()
        fleet.stop()
        drop_database(url)


def predict_url(gateway: LocalStack, model: str, version: int) -> str:
    return f"{gateway.gateway_url}/v1/models/{model}/versions/{version}:predict"


def wait_routed(gateway: LocalStack, model: str, version: int, replicas: int) -> None:
    """Until the gateway's pool has ``replicas`` replicas answering the version (ids in /metrics)."""
    body, _ = sample(model, version)

    def routed() -> bool:  # a 503 is "not yet": the gateway reads the replica table every 0.5 s
        before = replica_calls(gateway.gateway_url)
        for _ in range(4 * replicas):
            httpx.post(predict_url(gateway, model, version), json=body, timeout=30)
        after = replica_calls(gateway.gateway_url)
        return sum(1 for rid in after if after[rid] > before.get(rid, 0)) >= replicas

    deadline = time.monotonic() + 60
    while not routed():
        assert time.monotonic() < deadline, f"{model} v{version}: not on {replicas} replicas"


def spread(gateway: LocalStack, model: str, version: int, requests: int = 200, clients: int = 4) -> dict[str, float]:
    """Send ``requests`` through the gateway with ``clients`` clients; the calls each replica got."""
    body, _ = sample(model, version)
    before = replica_calls(gateway.gateway_url)
    with Load(predict_url(gateway, model, version), body, clients=clients) as load:
        deadline = time.monotonic() + 120
        while len(load.outcomes) < requests and time.monotonic() < deadline:
            time.sleep(0.05)
    assert {o.status for o in load.outcomes} == {200}
    after = replica_calls(gateway.gateway_url)
    return {rid: after[rid] - before.get(rid, 0) for rid in after if after[rid] > before.get(rid, 0)}


def admin(gateway: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    token = gateway.gateway_environment()["GATEWAY_ADMIN_TOKEN"]
    return subprocess.run([sys.executable, "-m", "gateway.cli", "--url", gateway.gateway_url, *args],
                          capture_output=True, text=True, env={**os.environ, "GATEWAY_ADMIN_TOKEN": token},
                          timeout=600)  # fmt: skip


@pytest.mark.parametrize(("model", "version", "replicas"), [("mlp", 1, ("ts-0", "ts-1")), ("mlp", 2, ("tf-0", "tf-1"))])
def test_requests_spread_evenly_between_two_equal_replicas(fleet, model, version, replicas):
    _, gateway = fleet
    wait_routed(gateway, model, version, 2)
    spread(gateway, model, version)  # both warm (least in flight favours a warmer, faster one)
    # One request at a time, both replicas idle at every pick: equal in every way the balancer sees,
    # so the split is the tie-break's (binomial: 40/60 is four standard deviations out at 400 calls).
    calls = spread(gateway, model, version, requests=400, clients=1)
    total = sum(calls.values())
    assert set(calls) == set(replicas), calls
    shares = {rid: calls[rid] / total for rid in replicas}
    print(f"\n{model} v{version}: {total:g} calls one at a time, shares {shares}")
    assert all(0.4 <= share <= 0.6 for share in shares.values()), shares
    # Four clients: least in flight keeps the replicas equally busy, not equally loaded: each gets a
    # share in proportion to its speed, and two processes on a shared two-core machine are rarely
    # equally fast (CI measured 62/38 and 19/81). Equally busy is what to check: a replica's time in
    # calls (the sum of its call durations) is its mean number of calls in flight times the run's
    # length (Little's law), so the two sums stay close, where a blind split would leave the slower
    # replica holding most of the calls in flight.
    busy_before = replica_calls(gateway.gateway_url, "_sum")
    calls = spread(gateway, model, version, requests=400)
    busy_after = replica_calls(gateway.gateway_url, "_sum")
    total = sum(calls.values())
    shares = {rid: calls.get(rid, 0) / total for rid in replicas}
    busy = {rid: busy_after[rid] - busy_before.get(rid, 0.0) for rid in replicas}
    print(f"{model} v{version}: {total:g} calls from 4 clients, shares {shares}, seconds in calls {busy}")
    assert all(shares.values()), shares
    assert max(busy.values()) <= 1.6 * min(busy.values()), (busy, shares)  # 1.07-1.24 measured


def test_a_deploy_loads_the_version_on_both_replicas_before_the_first_request_reaches_it(fleet):
    fleet_, gateway = fleet
    body, _ = sample("mlp", 3)
    seen: list[tuple[float, int, dict]] = []
    stop = threading.Event()

    def poll() -> None:  # asks for the new version all along the deploy
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                status = client.post(predict_url(gateway, "mlp", 3), json=body).status_code
                states = fleet_.states()
                seen.append(
                    (time.monotonic(), status, {rid: states.get(rid, {}).get(("mlp", 3)) for rid in ("ts-0", "ts-1")})
                )
                time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        done = admin(gateway, "deploy", "mlp", str(STORE / "mlp" / "3"), "--version", "3")
    finally:
        time.sleep(0.5)
        stop.set()
        poller.join()
    assert done.returncode == 0, done.stderr
    first = next(i for i, (_, status, _) in enumerate(seen) if status == 200)
    assert {status for _, status, _ in seen[:first]} <= {404}, seen[:first]
    assert all(state is not None and state[0] == "ready" for state in seen[first][2].values()), seen[first]
    history = json.loads(admin(gateway, "history", "mlp").stdout)["history"]
    deployed = next(h for h in history if h["action"] == "deploy" and h["outcome"] == "ok")
    assert deployed["detail"]["replicas"] == {"ts-0": "ready", "ts-1": "ready"}


def test_one_replica_failing_to_load_keeps_the_version_unrouted_and_changes_nothing_else(fleet):
    fleet_, gateway = fleet
    blocker = fleet_.members["tf-1"].dir / "mlp" / "5"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a directory: tf-1's local storage cannot take version 5")
    try:
        done = admin(gateway, "deploy", "mlp", str(STORE / "mlp" / "2"), "--version", "5")
    finally:
        blocker.unlink()
    assert done.returncode != 0
    assert "replica tf-1" in done.stderr and "Not a directory" in done.stderr, done.stderr
    body, _ = sample("mlp", 2)
    assert httpx.post(predict_url(gateway, "mlp", 5), json=body, timeout=30).status_code == 404
    assert fleet_.registry.staged() == []
    history = json.loads(admin(gateway, "history", "mlp").stdout)["history"]
    failed = next(h for h in history if h["action"] == "deploy")
    assert failed["outcome"] == "failed" and failed["detail"]["replicas"]["tf-1"].startswith("failed")
    for model, version in (("mlp", 1), ("mlp", 2), ("mlp", 3)):  # nothing else changed
        body, _ = sample(model, version)
        assert httpx.post(predict_url(gateway, model, version), json=body, timeout=30).status_code == 200
    deadline = time.monotonic() + 60  # tf-0, which had loaded it, unloads it again
    while ("mlp", 5) in fleet_.states().get("tf-0", {}):
        assert time.monotonic() < deadline, fleet_.states()
        time.sleep(0.5)


def test_killing_a_replica_under_load_fails_at_most_its_calls_in_flight_and_it_rejoins(fleet):
    fleet_, gateway = fleet
    body, _ = sample("mlp", 1)
    with Load(predict_url(gateway, "mlp", 1), body, clients=4, timeout=TIMEOUT + 20) as load:
        time.sleep(3)
        killed_at = time.monotonic()
        fleet_.members["ts-1"].kill()
        time.sleep(8)  # past the replica TTL: the pool has dropped it
    after = load.since(killed_at)
    failed = [o for o in after if o.status != 200]
    print(f"\nkilled ts-1 under load: {len(after)} requests after the kill, {len(failed)} failed "
          f"({[o.status for o in failed]}), slowest {max(o.seconds for o in after):.2f}s")  # fmt: skip
    assert len(failed) <= load.clients  # at most the calls in flight on ts-1 at that instant
    assert all(o.status != 0 for o in load.outcomes)  # every request was answered ...
    assert max(o.seconds for o in load.outcomes) < TIMEOUT + 2  # ... within its deadline
    assert sum(1 for o in after if o.status == 200) > 20  # ts-0 carried the load
    assert spread(gateway, "mlp", 1, 40).keys() == {"ts-0"}

    fleet_.members["ts-1"].start()  # same id, same address, its local storage as it was
    fleet_.wait_ready(["ts-1"], "mlp", 1)
    wait_routed(gateway, "mlp", 1, 2)
    # A backend just started answers slower for its first few hundred calls (its JVM is cold), and
    # under load least in flight gives a slower replica fewer calls (CI: 3-30% at first), so that
    # it has rejoined is checked one request at a time, where speed does not count: both replicas
    # are idle at every pick and each gets about half (30% is five standard deviations out).
    warming = spread(gateway, "mlp", 1)
    calls = spread(gateway, "mlp", 1, 300, clients=1)
    print(f"\nts-1 back: while warming {warming}, then one at a time {calls}")
    assert calls.get("ts-1", 0) / sum(calls.values()) >= 0.3, calls


def test_a_replica_added_under_load_converges_then_takes_its_share(fleet):
    fleet_, gateway = fleet
    body, _ = sample("mlp", 1)
    with Load(predict_url(gateway, "mlp", 1), body, clients=4, timeout=TIMEOUT + 20) as load:
        added = fleet_.add("ts-2", "torchserve")
        fleet_.wait_ready([added.rid], "mlp", 1)
        fleet_.wait_ready([added.rid], "mlp", 3)
    assert {o.status for o in load.outcomes} == {200}  # no error while it joined
    wait_routed(gateway, "mlp", 1, 3)
    warming = spread(gateway, "mlp", 1)
    calls = spread(gateway, "mlp", 1, 300, clients=1)  # one at a time: its share whatever its speed, as above
    print(f"\nts-2 added: while warming {warming}, then one at a time {calls}")
    assert set(calls) == {"ts-0", "ts-1", "ts-2"}, calls
    assert calls["ts-2"] / sum(calls.values()) >= 0.2, calls  # a third expected: 20% is five deviations out
