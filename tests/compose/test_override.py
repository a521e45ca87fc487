"""The compose tests' override changes only images, networks, the published address and the probe
interval: what runs in each container is the project's own configuration. Checked offline with
the real Docker Compose (`docker-compose config`); no engine needed."""

from __future__ import annotations

import json

from tests.compose.conftest import OVERRIDE
from tests.deploy.conftest import COMPOSE_CPU_FILE, COMPOSE_DUMMY_ENV, COMPOSE_FILE, compose_config

ENV = {
    **COMPOSE_DUMMY_ENV,
    "COMPOSE_TEST_GATEWAY_IMAGE": "gw:test",
    "COMPOSE_TEST_TORCHSERVE_IMAGE": "ts:test",
    "COMPOSE_TEST_TFSERVING_IMAGE": "tf:test",
    "COMPOSE_TEST_POSTGRES_IMAGE": "pg:test",
    "COMPOSE_TEST_GATEWAY_PORT": "18000",
    "COMPOSE_TEST_GATEWAY_GRPC_PORT": "18002",
}
RUNNING = ("model-init", "torchserve", "tfserving", "gateway", "postgres")


def merged(*files):
    done = compose_config(*files, env=ENV)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_containers_run_the_projects_commands_volumes_and_health_checks():
    project = merged(COMPOSE_FILE, COMPOSE_CPU_FILE)["services"]
    tested = merged(COMPOSE_FILE, COMPOSE_CPU_FILE, OVERRIDE)["services"]
    for name in RUNNING:
        for key in ("entrypoint", "command", "volumes", "healthcheck", "depends_on", "user", "read_only"):
            assert tested[name].get(key) == project[name].get(key), (name, key)
    environment = {k: v for k, v in tested["gateway"]["environment"].items() if k != "GATEWAY_BACKEND_PROBE_SECONDS"}
    assert environment == project["gateway"]["environment"]
    assert {n: tested[n]["image"] for n in RUNNING} == {
        "model-init": "gw:test",
        "torchserve": "ts:test",
        "tfserving": "tf:test",
        "gateway": "gw:test",
        "postgres": "pg:test",
    }


def test_only_the_gateway_is_published_and_only_on_loopback():
    config = merged(COMPOSE_FILE, COMPOSE_CPU_FILE, OVERRIDE)
    services = config["services"]
    assert set(services) == set(RUNNING), "monitoring and GPU services are not started"
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert published == {
        "gateway": [
            {"mode": "ingress", "host_ip": "127.0.0.1", "target": 8000, "published": "18000", "protocol": "tcp"},
            {"mode": "ingress", "host_ip": "127.0.0.1", "target": 8002, "published": "18002", "protocol": "tcp"},
        ]
    }
    assert config["networks"]["backend"]["internal"] is True
    assert not config["networks"]["edge"].get("internal")
    for name in RUNNING:
        want = {"backend", "edge"} if name == "gateway" else {"backend"}
        assert set(services[name]["networks"]) == want, name
