"""Two replicas of each backend stack (`docker compose up --scale torchserve=2 --scale tfserving=2`),
each with the gateway's agent as its entry wrapper, the registry in the compose PostgreSQL and the
artifacts in the gateway's local artifact store on a named volume.

What is checked, through the project's compose files: every replica registers at its own address
and reports the seeded versions ready; requests through the gateway are answered by both replicas
of a stack (the gateway's per-replica metrics, docs of issue 15's contract); a deploy through the
gateway reaches both replicas. They run after tests/compose/test_compose_stack.py (which checks
what each replica loads after deploys, retirements and restarts) and depend on no state of it
beyond ``mlp`` v1 on TorchServe and ``mlp`` v4 (mlp v2's SavedModel) on TF Serving."""

from __future__ import annotations

import json
import re
import time

import numpy as np

from tests.compose.conftest import BACKENDS, REPLICAS, ComposeStack
from tests.compose.test_compose_stack import deploy, expected, predict

CONVERGE_DEADLINE_S = 240.0
METRIC = re.compile(r"^gateway_replica_request_duration_seconds_count\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def replicas(stack: ComposeStack) -> dict[str, tuple[str, str]]:
    """replica id -> (stack, address), as the agents registered them."""
    return {r[0]: (r[1], r[2]) for r in stack.registry("SELECT replica_id, stack, address FROM registry_replicas")}


def ready_on(stack: ComposeStack, model: str, version: int) -> set[str]:
    rows = stack.registry(f"SELECT replica_id FROM registry_replica_versions WHERE model = '{model}' "
                          f"AND version = {version} AND state = 'ready'")  # fmt: skip
    return {r[0] for r in rows}


def container_hosts(stack: ComposeStack, service: str) -> dict[str, str]:
    """host name -> address on the internal network, for each container of ``service``."""
    found = {}
    for container in stack.containers(service):
        info = stack.inspect(service, container)
        (network,) = info["NetworkSettings"]["Networks"].values()
        found[info["Config"]["Hostname"]] = network["IPAddress"]
    return found


def wait_for(check, what: str, deadline_s: float = CONVERGE_DEADLINE_S):
    deadline = time.monotonic() + deadline_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"not within {deadline_s:g}s: {what}"
        time.sleep(1)
    return result


def replica_calls(stack: ComposeStack) -> dict[tuple[str, str], float]:
    """(stack, replica) -> calls the gateway made to that replica, from its /metrics (port 8001,
    on the compose network only: read inside the gateway's container). With GATEWAY_WORKERS=2 the
    metrics are the workers' sum (multiprocess mode)."""
    code, body = stack.http_inside("gateway", 8001, "/metrics")
    assert code == 200, body
    calls: dict[tuple[str, str], float] = {}
    for line in body.splitlines():
        if match := METRIC.match(line):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
            key = (labels["stack"], labels["replica"])
            calls[key] = calls.get(key, 0.0) + float(match["value"])
    return calls


def test_every_replica_registers_at_its_own_address_and_holds_the_seeded_versions(compose_stack):
    for service in BACKENDS:
        hosts = container_hosts(compose_stack, service)
        assert len(hosts) == REPLICAS, (service, hosts)
        registered = wait_for(
            lambda s=service, h=hosts: (
                {r: v for r, v in replicas(compose_stack).items() if v[0] == s}
                if set(h) <= set(replicas(compose_stack))
                else None
            ),
            f"{service}'s replicas registered",
        )
        # The replica id is the container's host name; the address its own, resolved by the agent ({ip}).
        port = ":8080" if service == "torchserve" else ":8500"
        want = {host: f"{'http://' if service == 'torchserve' else ''}{ip}{port}" for host, ip in hosts.items()}
        assert {r: a for r, (_, a) in registered.items() if r in hosts} == want
    # Every available version of a stack (the seeded ones adopted by the gateway and stored in the
    # artifact store, and those deployed since) is ready on every replica of that stack.
    for service in BACKENDS:
        hosts = set(container_hosts(compose_stack, service))
        available = compose_stack.registry(f"SELECT model, version FROM registry_versions WHERE backend = "
                                            f"'{service}' AND state = 'available'")  # fmt: skip
        assert available, service
        for model, version in available:
            wait_for(lambda m=model, v=int(version), h=hosts: h <= ready_on(compose_stack, m, v),
                     f"{service} {model} v{version} ready on {sorted(hosts)}")  # fmt: skip


def test_requests_through_the_gateway_reach_both_replicas_of_each_stack(gateway, compose_stack):
    before = replica_calls(compose_stack)
    for _ in range(40):
        for version, source in ((1, 1), (4, 2)):  # TorchServe's mlp v1, TF Serving's mlp v4 (v2's model)
            r = predict(gateway, "mlp", version)
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(r.json()["predictions"], expected("mlp", source), atol=1e-5)
    after = replica_calls(compose_stack)
    for service in BACKENDS:
        hosts = container_hosts(compose_stack, service)
        served = {host: after.get((service, host), 0.0) - before.get((service, host), 0.0) for host in hosts}
        assert all(n > 0 for n in served.values()), (service, served)
        assert sum(served.values()) >= 40, (service, served)


def test_a_deploy_through_the_gateway_reaches_both_replicas(gateway, compose_stack):
    """A new version (mlp v2's SavedModel as v6) is ready on both TF Serving replicas when the
    deploy answers, and on each replica's own server. (TorchServe's: mlp v3 in
    test_compose_stack.py's test_deploy_a_new_version_on_each_stack, checked on both replicas:
    a .mar carries its version number, and the store has no other TorchServe version to deploy.)"""
    done = deploy(gateway, "mlp", 2, 6)
    assert (done["backend"], done["status"]) == ("tfserving", "deployed")
    # Ready on both replicas of its stack once the deploy answered (min_ready: all replicas).
    assert ready_on(compose_stack, "mlp", 6) >= set(container_hosts(compose_stack, "tfserving"))
    for index in range(1, REPLICAS + 1):
        code, body = compose_stack.http_inside("tfserving", 8501, "/v1/models/mlp/versions/6", index)
        assert code == 200, (index, code, body)
        assert json.loads(body)["model_version_status"][0]["state"] == "AVAILABLE", (index, body)
    before = replica_calls(compose_stack)
    for _ in range(20):
        r = predict(gateway, "mlp", 6)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], expected("mlp", 2), atol=1e-4)
    after = replica_calls(compose_stack)
    served = {h: after.get(("tfserving", h), 0) - before.get(("tfserving", h), 0)
              for h in container_hosts(compose_stack, "tfserving")}  # fmt: skip
    assert all(n > 0 for n in served.values()), served
