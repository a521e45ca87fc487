"""docker-compose.yml and docker-compose.cpu.yml, as the real Docker Compose reads them (offline:
`docker-compose config` validates against the Compose Specification schema, interpolates and
merges; no engine is needed)."""

from __future__ import annotations

import re

from tests.deploy.conftest import COMPOSE_CPU_FILE, COMPOSE_DUMMY_ENV, COMPOSE_FILE, compose_config

BACKENDS = ("torchserve", "tfserving")
SECRET_WORDS = re.compile(r"TOKEN|PASSWORD|SECRET|PASSWD|KEY", re.I)


def one_shot(config):
    """Services others wait for with service_completed_successfully: they run and exit."""
    return {
        name
        for service in config["services"].values()
        for name, dep in (service.get("depends_on") or {}).items()
        if dep["condition"] == "service_completed_successfully"
    }


def test_compose_files_validate_with_docker_compose():
    for files in ((COMPOSE_FILE,), (COMPOSE_FILE, COMPOSE_CPU_FILE)):
        done = compose_config(*files, env=COMPOSE_DUMMY_ENV)
        assert done.returncode == 0, done.stderr


def test_the_admin_token_must_come_from_the_environment():
    env = {k: v for k, v in COMPOSE_DUMMY_ENV.items() if k != "GATEWAY_ADMIN_TOKEN"}
    done = compose_config(COMPOSE_FILE, env=env)
    assert done.returncode != 0
    assert "GATEWAY_ADMIN_TOKEN" in done.stderr


def test_every_image_is_pinned_to_an_explicit_tag(compose, compose_cpu):
    for config in (compose, compose_cpu):
        for name, service in config["services"].items():
            image = service["image"]
            repo, _, tag = image.rpartition(":")
            assert repo and "/" not in tag, f"{name}: {image} names no tag"
            assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned to a version"


def test_each_backend_reserves_a_gpu(compose):
    for name in (*BACKENDS, "dcgm-exporter"):
        devices = compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1, name
        device = devices[0]
        assert device["driver"] == "nvidia", name
        assert "gpu" in device["capabilities"], name
        assert device.get("device_ids") or device.get("count"), f"{name}: reserves no GPU"
    assert compose["services"]["torchserve"]["image"].endswith("-gpu")
    assert compose["services"]["tfserving"]["image"].endswith("-gpu")


def test_tfserving_leaves_gpu_memory_to_torchserve(compose):
    command = compose["services"]["tfserving"]["command"]
    fraction = [a for a in command if a.startswith("--per_process_gpu_memory_fraction=")]
    assert len(fraction) == 1
    assert 0 < float(fraction[0].split("=", 1)[1]) < 1


def test_the_cpu_override_removes_every_gpu_need(compose_cpu):
    services = compose_cpu["services"]
    assert "dcgm-exporter" not in services
    for name, service in services.items():
        assert "devices" not in str(service.get("deploy", {})), name
    assert services["torchserve"]["image"].endswith("-cpu")
    assert not services["tfserving"]["image"].endswith("-gpu")


def test_every_long_running_service_has_a_health_check(compose):
    once = one_shot(compose)
    assert once == {"model-init"}
    for name, service in compose["services"].items():
        if name in once:
            assert service.get("restart") in (None, "no"), name
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_dependencies_wait_for_health(compose):
    once = one_shot(compose)
    for name, service in compose["services"].items():
        for dep, rule in (service.get("depends_on") or {}).items():
            wanted = "service_completed_successfully" if dep in once else "service_healthy"
            assert rule["condition"] == wanted, f"{name} -> {dep}"
    gateway = compose["services"]["gateway"]["depends_on"]
    # The replicas register themselves: the gateway waits for its store's seed and the registry only.
    assert set(gateway) == {"model-init", "postgres"}
    for backend in BACKENDS:
        assert set(compose["services"][backend]["depends_on"]) == {"postgres"}, backend


def test_only_the_gateway_grafana_and_prometheus_are_published(compose):
    published = {
        name: [(p.get("host_ip", ""), int(p["published"]), p["target"]) for p in service.get("ports", [])]
        for name, service in compose["services"].items()
        if service.get("ports")
    }
    assert published == {
        "gateway": [("", 8000, 8000), ("127.0.0.1", 8002, 8002)],  # REST; the gRPC doors on loopback
        "grafana": [("", 3000, 3000)],
        "prometheus": [("127.0.0.1", 9090, 9090)],
    }


def test_replicas_scale_and_read_artifacts_the_gateway_writes(compose):
    """No shared model store: the gateway writes the artifact store, each replica reads it (and
    keeps its versions inside its container); nothing fixes a replica's name or host port."""
    services = compose["services"]

    def mounts(name, source):
        return [v for v in services[name]["volumes"] if v.get("source") == source]

    assert len(mounts("gateway", "artifacts")) == 1 and not mounts("gateway", "artifacts")[0].get("read_only")
    env = services["gateway"]["environment"]
    assert (env["GATEWAY_AGENT_STACKS"], env["GATEWAY_ARTIFACT_STORE"]) == ("torchserve,tfserving", "local")
    for backend in BACKENDS:
        service = services[backend]
        assert [v.get("read_only") for v in mounts(backend, "artifacts")] == [True], backend
        assert not mounts(backend, "model-store"), backend
        assert "container_name" not in service and not service.get("ports"), backend
        assert service["entrypoint"] == ["/opt/agent/bin/gateway", "agent"], backend
        command = service["command"]
        assert f"--stack={backend}" in command and "--" in command, backend
        assert any(a.startswith("--inference-url=") and "{ip}" in a for a in command), backend
        assert service["environment"]["GATEWAY_ARTIFACT_STORE_DIR"] == env["GATEWAY_ARTIFACT_STORE_DIR"]
        assert service["environment"]["GATEWAY_DATABASE_URL"] == env["GATEWAY_DATABASE_URL"]
        assert service["environment"]["GATEWAY_DATABASE_URL"].startswith("postgresql"), backend
        assert service["build"]["dockerfile"] == "deploy/docker/backend.Dockerfile", backend
    assert "profiles" not in services["postgres"]  # the shared registry always runs


def test_no_secret_is_written_in_the_compose_file(compose_raw):
    for name, service in compose_raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_WORDS.search(key):
                assert str(value).startswith("${") or str(value).startswith("/run/secrets/"), (
                    f"{name}: {key} holds a literal value"
                )
        url = str((service.get("environment") or {}).get("GATEWAY_DATABASE_URL", ""))
        assert not re.search(r"://[^/@:]+:[^/@]+@", url), f"{name}: a password in the database URL"
    for name, secret in compose_raw["secrets"].items():
        assert set(secret) == {"environment"}, f"secret {name} must come from the environment"
    assert "${GATEWAY_ADMIN_TOKEN:?" in compose_raw["services"]["gateway"]["environment"]["GATEWAY_ADMIN_TOKEN"]


def test_grafana_gets_provisioning_dashboards_and_a_password_file(compose):
    grafana = compose["services"]["grafana"]
    mounts = {v["target"]: v["source"] for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"].endswith("deploy/grafana/provisioning")
    assert mounts["/var/lib/grafana/dashboards"].endswith("deploy/grafana/dashboards")
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    prometheus = {v["target"]: v["source"] for v in compose["services"]["prometheus"]["volumes"]}
    assert prometheus["/etc/prometheus"].endswith("deploy/prometheus")
