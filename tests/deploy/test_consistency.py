"""The deployments agree with the gateway's code and with each other: settings, routes, ports,
paths, the backends' configuration files and the Prometheus scrape targets. Each fact is read from
its source (Settings, the app's routes, config.properties, monitoring.config, prometheus.yml),
never written twice in a test."""

from __future__ import annotations

import re
import urllib.parse

import pytest
import yaml
from google.protobuf import text_format

from gateway.agent.agent import READY_FILE
from gateway.backends.tfserving.client import TFServingBackend
from gateway.backends.tfserving.protos import serving_pb2 as pb
from gateway.backends.torchserve import link_archive
from gateway.core.names import MODEL_NAME_PATTERN, canonical_version, is_model_name
from gateway.routing.discovery import scan_store
from gateway.settings import Settings
from tests.deploy.conftest import (
    DOCKERFILE,
    OVERLAYS,
    ROOT,
    TF_MONITORING,
    TS_CONFIG,
    container,
    env_of,
    flags,
    gpu_memory_fractions,
    objects,
    pod_spec,
    properties,
    resolved_env,
    scrape_targets,
)
from tests.deploy.docker_stack import load_stack_init
from tests.fakes import make_version

TS = properties(TS_CONFIG)
# TorchServe in a compose replica, beside its agent (docker-compose.yml).
TS_REPLICA_CONFIG = ROOT / "deploy" / "docker" / "torchserve" / "replica.properties"
TS_REPLICA = properties(TS_REPLICA_CONFIG)
MONITORING_PATH = re.search(r'path:\s*"([^"]+)"', TF_MONITORING.read_text()).group(1)  # type: ignore[union-attr]


def address_port(address: str) -> int:
    return urllib.parse.urlsplit(address).port or 0


# Where each component's metrics are, from the component's own configuration.
TS_PORTS = {name: address_port(TS[f"{name}_address"]) for name in ("inference", "management", "metrics")}
TS_REPLICA_PORTS = {name: address_port(TS_REPLICA[f"{name}_address"]) for name in TS_PORTS}


def host_port(value: str) -> tuple[str, int]:
    """``http://host:port`` or ``host:port`` -> (host, port)."""
    parts = urllib.parse.urlsplit(value if "//" in value else f"//{value}")
    assert parts.hostname and parts.port, value
    return parts.hostname, parts.port


def compose_env(compose, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in (compose["services"][name].get("environment") or {}).items()}


def compose_mounts(compose, name: str) -> dict[str, dict]:
    return {v["target"]: v for v in compose["services"][name].get("volumes", [])}


# --- settings ---------------------------------------------------------------------------------
def gateway_variables(compose, k8s) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, service in compose["services"].items():
        for key in service.get("environment") or {}:
            found.setdefault(key, []).append(f"compose {name}")
    for overlay, docs in k8s.items():
        for dname, deployment in objects(docs, "Deployment").items():
            spec = pod_spec(deployment)
            for c in spec["containers"] + spec.get("initContainers", []):
                for key in env_of(c):
                    found.setdefault(key, []).append(f"k8s/{overlay} {dname}/{c['name']}")
    for key in re.findall(r"\b(GATEWAY_[A-Z_]+)=", DOCKERFILE.read_text()):
        found.setdefault(key, []).append("gateway.Dockerfile")
    return {k: v for k, v in found.items() if k.startswith("GATEWAY_")}


def test_every_gateway_variable_is_a_setting(compose, k8s):
    variables = gateway_variables(compose, k8s)
    assert len(variables) >= 10
    for key, where in sorted(variables.items()):
        name = key.removeprefix("GATEWAY_").lower()
        assert name in Settings.model_fields, f"{key} ({', '.join(where)})"


def test_the_given_values_are_valid_settings(compose, k8s):
    values = {
        k.removeprefix("GATEWAY_").lower(): v
        for k, v in compose_env(compose, "gateway").items()
        if k.startswith("GATEWAY_")
    }
    Settings(_env_file=None, **values)  # type: ignore[call-arg]
    for docs in k8s.values():
        for deployment in objects(docs, "Deployment").values():
            for c in pod_spec(deployment)["containers"]:
                if c["name"] not in ("gateway", "agent"):
                    continue
                plain = {
                    k.removeprefix("GATEWAY_").lower(): v
                    for k, v in resolved_env(c, docs).items()  # ConfigMap values as the pod gets them
                    if k.startswith("GATEWAY_") and isinstance(v, str)
                }
                Settings(_env_file=None, **plain)  # type: ignore[call-arg]


# --- the gateway's own port and routes ----------------------------------------------------------
def test_the_gateway_listens_where_it_is_probed_and_published(compose, k8s, has_route):
    env = compose_env(compose, "gateway")
    port = int(env["GATEWAY_PORT"])
    assert env["GATEWAY_HOST"] == "0.0.0.0"
    assert [p["target"] for p in compose["services"]["gateway"]["ports"]] == [port, int(env["GATEWAY_GRPC_PORT"])]
    check = " ".join(compose["services"]["gateway"]["healthcheck"]["test"])
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]+)", check)
    assert url and int(url.group(1)) == port and has_route(url.group(2)) and url.group(2) == "/v2/health/ready"

    for overlay, docs in k8s.items():
        deployment = objects(docs, "Deployment")["gateway"]
        c = container(deployment, "gateway")
        kenv = env_of(c)
        kport = int(kenv["GATEWAY_PORT"])
        assert kenv["GATEWAY_HOST"] == "0.0.0.0" and kport == port, overlay
        named = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert named[c[probe]["httpGet"]["port"]] == kport, (overlay, probe)
        service_ports = {p["name"]: p for p in objects(docs, "Service")["gateway"]["spec"]["ports"]}
        assert named[service_ports["http"]["targetPort"]] == kport and service_ports["http"]["port"] == port


def test_metrics_are_served_where_prometheus_looks(compose, k8s, prometheus, has_route):
    """On the metrics port (GATEWAY_METRICS_PORT) everywhere, never published nor on the public port."""
    (job,) = [t for t in scrape_targets(prometheus) if t.host == "gateway"]
    env = compose_env(compose, "gateway")
    metrics_port = int(env["GATEWAY_METRICS_PORT"])
    assert (job.port, job.path) == (metrics_port, "/metrics") and metrics_port != int(env["GATEWAY_PORT"])
    assert metrics_port not in [p["target"] for p in compose["services"]["gateway"]["ports"]]
    assert has_route("/metrics")  # the app's own route: what serves the local stack (no metrics port)
    for overlay, docs in k8s.items():
        c = container(objects(docs, "Deployment")["gateway"], "gateway")
        assert int(env_of(c)["GATEWAY_METRICS_PORT"]) == metrics_port, overlay
        named = {p["name"]: p["containerPort"] for p in c["ports"]}
        service_ports = {p["name"]: p for p in objects(docs, "Service")["gateway"]["spec"]["ports"]}
        assert named[service_ports["metrics"]["targetPort"]] == metrics_port, overlay


def test_the_grpc_doors_listen_where_they_are_published(compose, k8s):
    """GATEWAY_GRPC_PORT: published on loopback by compose; a named port ``grpc`` on the k8s
    Deployment and Service, admitted by the gateway's NetworkPolicy."""
    env = compose_env(compose, "gateway")
    grpc_port = int(env["GATEWAY_GRPC_PORT"])
    assert grpc_port not in (int(env["GATEWAY_PORT"]), int(env["GATEWAY_METRICS_PORT"]))
    published = [(p.get("host_ip"), p["target"]) for p in compose["services"]["gateway"]["ports"]]
    assert ("127.0.0.1", grpc_port) in published
    for overlay, docs in k8s.items():
        c = container(objects(docs, "Deployment")["gateway"], "gateway")
        assert int(env_of(c)["GATEWAY_GRPC_PORT"]) == grpc_port, overlay
        named = {p["name"]: p["containerPort"] for p in c["ports"]}
        service_ports = {p["name"]: p for p in objects(docs, "Service")["gateway"]["spec"]["ports"]}
        assert named[service_ports["grpc"]["targetPort"]] == grpc_port, overlay
        policy = objects(docs, "NetworkPolicy")["gateway-ingress"]
        open_ports = {p["port"] for rule in policy["spec"]["ingress"] if "from" not in rule for p in rule["ports"]}
        assert grpc_port in open_ports, overlay


# --- the backends, as the gateway addresses them ------------------------------------------------
def test_compose_replicas_register_where_their_servers_listen(compose):
    """Each replica's agent: the management API on the container's loopback (TorchServe's
    replica.properties binds it there), the inference address on the container's own address ({ip})
    at the port the server listens on and the service exposes; the gateway routes over them."""
    services = compose["services"]
    assert compose_env(compose, "gateway")["GATEWAY_AGENT_STACKS"] == "torchserve,tfserving"
    ts = services["torchserve"]["command"]
    split = ts.index("--")
    agent, serve = flags(ts[:split]), flags(ts[split + 1 :])
    assert host_port(agent["management-url"]) == ("127.0.0.1", TS_REPLICA_PORTS["management"])
    assert urllib.parse.urlsplit(TS_REPLICA["management_address"]).hostname == "127.0.0.1"
    assert agent["inference-url"] == f"http://{{ip}}:{TS_REPLICA_PORTS['inference']}"
    assert {str(TS_REPLICA_PORTS[p]) for p in ("inference", "metrics")} == set(services["torchserve"]["expose"])
    assert serve["model-store"] == TS_REPLICA["model_store"] == agent["model-dir"]
    assert compose_mounts(compose, "torchserve")[serve["ts-config"]]["source"] == str(TS_REPLICA_CONFIG)
    assert "enable-model-api" in serve and "disable-token-auth" in serve and "foreground" in serve
    check = " ".join(services["torchserve"]["healthcheck"]["test"])
    assert f"127.0.0.1:{TS_REPLICA_PORTS['inference']}/ping" in check
    # Healthy once the agent holds the stack's versions: its readiness file in its --model-dir.
    assert f"os.path.isfile('{agent['model-dir']}/{READY_FILE}')" in check
    assert compose_env(compose, "torchserve")["GATEWAY_TORCHSERVE_WORKERS"] == "1"

    tf = services["tfserving"]["command"]
    split = tf.index("--")
    agent, serve = flags(tf[:split]), flags(tf[split + 1 :])
    assert tf[split + 1] == "tensorflow_model_server"
    # TF Serving's ModelService (the agent's reloads) shares the gRPC port with PredictionService.
    assert host_port(agent["management-url"]) == ("127.0.0.1", int(serve["port"]))
    assert agent["inference-url"] == f"{{ip}}:{serve['port']}"
    assert {serve["port"], serve["rest_api_port"]} == set(services["tfserving"]["expose"])
    monitoring = compose_mounts(compose, "tfserving")[serve["monitoring_config_file"]]
    assert monitoring["source"] == str(TF_MONITORING)
    check = " ".join(services["tfserving"]["healthcheck"]["test"])
    assert f"/dev/tcp/127.0.0.1/{serve['rest_api_port']}" in check and MONITORING_PATH in check
    assert check.endswith(f"&& test -f {agent['model-dir']}/{READY_FILE}")
    # It starts with no model (the file the backend image writes): the agent loads what is wanted.
    assert serve["model_config_file"] == "/opt/agent/etc/tfserving-empty.config"
    assert "tfserving-empty.config" in (ROOT / "deploy" / "docker" / "backend.Dockerfile").read_text()


def test_the_torchserve_replica_config_differs_from_the_shared_one_only_where_it_must():
    """replica.properties: management on loopback, the replica-local store; the rest as config.properties."""
    differ = {k for k in TS.keys() | TS_REPLICA.keys() if TS.get(k) != TS_REPLICA.get(k)}
    assert differ == {"management_address", "model_store"}
    assert TS_REPLICA_PORTS == TS_PORTS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_backend_ports_agree_with_their_configs(k8s, overlay):
    """The gateway reaches each replica at the address its agent registers (tests/deploy/test_k8s.py);
    here: the containers declare the ports their configurations listen on, all interfaces but
    TorchServe's management API, which the k8s copy binds to loopback and no port declares."""
    docs = k8s[overlay]
    deployments = objects(docs, "Deployment")
    tf_flags = flags(container(deployments["tfserving"], "tfserving")["args"])
    ts_ports = {p["name"]: p["containerPort"] for p in container(deployments["torchserve"], "torchserve")["ports"]}
    assert ts_ports == {name: TS_PORTS[name] for name in ("inference", "metrics")}
    tf_ports = {p["name"]: p["containerPort"] for p in container(deployments["tfserving"], "tfserving")["ports"]}
    assert tf_ports == {"grpc": int(tf_flags["port"]), "rest": int(tf_flags["rest_api_port"])}


# --- TorchServe ---------------------------------------------------------------------------------
def test_the_torchserve_config_is_what_the_issue_asks():
    assert all(urllib.parse.urlsplit(TS[f"{n}_address"]).hostname == "0.0.0.0" for n in TS_PORTS)
    assert TS_PORTS == {"inference": 8080, "management": 8081, "metrics": 8082}
    assert TS["metrics_mode"] == "prometheus"
    assert TS["enable_model_api"] == "true" and TS["disable_token_authorization"] == "true"
    for remote in ("https://example.com/m.mar", "http://10.0.0.1/m.mar", "s3://bucket/m.mar", "file:///etc/passwd"):
        assert not re.search(TS["allowed_urls"], remote), remote


# Compose's replicas start TorchServe and TF Serving behind their agents with no start-up
# registration or init step: test_compose_replicas_register_where_their_servers_listen; Kubernetes:
# tests/deploy/test_k8s.py.


# --- GPUs --------------------------------------------------------------------------------------
def test_where_both_stacks_share_a_gpu_their_memory_fits_on_it(compose, k8s):
    """TF Serving takes a whole GPU's memory unless bounded, TorchServe's handler as much as its
    models ask: compose puts both on GPU 0 by default, the Kubernetes device plugin may hand one
    GPU to both pods (time-slicing, MPS). Each is bounded, and the two bounds fit on one GPU."""
    services = compose["services"]
    devices = {
        name: [d["device_ids"] for d in services[name]["deploy"]["resources"]["reservations"]["devices"]]
        for name in ("torchserve", "tfserving")
    }
    assert devices["torchserve"] == devices["tfserving"]
    fractions = {
        "compose": {
            "tfserving": float(flags(services["tfserving"]["command"])["per_process_gpu_memory_fraction"]),
            "torchserve": float(compose_env(compose, "torchserve")["TS_GPU_MEMORY_FRACTION"]),
        },
        "k8s/gpu": gpu_memory_fractions(k8s["gpu"]),
    }
    for where, bounds in fractions.items():
        assert all(0 < f < 1 for f in bounds.values()) and sum(bounds.values()) <= 1, (where, bounds)


def test_the_torchserve_handler_reads_the_memory_fraction_the_deployments_set():
    handler = ROOT / "deploy" / "examples" / "torchserve_handler.py"
    if "TS_GPU_MEMORY_FRACTION" not in handler.read_text():
        pytest.skip(f"{handler.relative_to(ROOT)} does not read TS_GPU_MEMORY_FRACTION yet (another change adds it)")
    assert "set_per_process_memory_fraction" in handler.read_text()


# --- Prometheus ---------------------------------------------------------------------------------
def expected_metrics(compose) -> dict[str, tuple[int, str]]:
    """Each compose service's metrics endpoint, from that service's own configuration."""
    tf_flags = flags(compose["services"]["tfserving"]["command"])
    dcgm = compose["services"]["dcgm-exporter"]["environment"]["DCGM_EXPORTER_LISTEN"]
    return {
        "gateway": (int(compose_env(compose, "gateway")["GATEWAY_METRICS_PORT"]), "/metrics"),
        "torchserve": (TS_PORTS["metrics"], "/metrics"),
        "tfserving": (int(tf_flags["rest_api_port"]), MONITORING_PATH),
        "dcgm-exporter": (int(dcgm.rsplit(":", 1)[1]), "/metrics"),
    }


def test_prometheus_scrapes_every_compose_service_where_it_serves_metrics(compose, prometheus):
    targets = scrape_targets(prometheus)
    found = {t.host: (t.port, t.path) for t in targets}
    assert found == expected_metrics(compose) | {h: found[h] for h in found if h in ("localhost", "127.0.0.1")}
    for t in targets:
        if t.host not in ("localhost", "127.0.0.1"):
            assert t.host in compose["services"], f"job {t.job}: no compose service {t.host}"


def test_prometheus_rule_files_are_in_the_mounted_directory(compose, prometheus):
    mounts = compose_mounts(compose, "prometheus")
    assert mounts["/etc/prometheus"]["source"] == str(ROOT / "deploy" / "prometheus")
    for rule_file in prometheus.get("rule_files") or []:
        assert list((ROOT / "deploy" / "prometheus").glob(rule_file)), rule_file


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitors_scrape_what_compose_scrapes(k8s_monitoring, compose, prometheus, overlay):
    """Same names, ports and paths as prometheus.yml: the Operator names each job after its
    Service, so the dashboards' job="gateway|torchserve|tfserving" selectors hold in both."""
    docs = k8s_monitoring[overlay]
    services, monitors = objects(docs, "Service"), objects(docs, "ServiceMonitor")
    by_host = {t.host: t for t in scrape_targets(prometheus)}
    for name, monitor in monitors.items():
        target = by_host[name]
        assert target.job == name, f"compose job {target.job} vs k8s job {name} (the Service's name)"
        (endpoint,) = monitor["spec"]["endpoints"]
        (port,) = [p for p in services[name]["spec"]["ports"] if p["name"] == endpoint["port"]]
        assert (port["port"], endpoint["path"]) == (target.port, target.path), name
        deployment = objects(docs, "Deployment")[name]
        named = {p["name"]: p["containerPort"] for p in container(deployment, name)["ports"]}
        assert named[port["targetPort"]] == target.port, name
    missing = set(by_host) - set(monitors) - {"dcgm-exporter", "localhost", "127.0.0.1"}
    assert not missing, f"no ServiceMonitor for {missing}"


def test_grafana_reads_the_compose_prometheus(compose):
    datasources = ROOT / "deploy" / "grafana" / "provisioning" / "datasources"
    files = sorted(datasources.glob("*.y*ml"))
    if not files:
        pytest.skip("deploy/grafana/provisioning/datasources/ does not exist yet (another change adds it)")
    urls = [d["url"] for f in files for d in yaml.safe_load(f.read_text()).get("datasources", [])]
    prometheus_port = compose["services"]["prometheus"]["ports"][0]["target"]
    assert f"http://prometheus:{prometheus_port}" in urls


# --- the store helper and the gateway follow the same rules --------------------------------------
def test_stack_init_reads_the_store_as_the_gateway_does(tmp_path):
    stack_init = load_stack_init()
    store = tmp_path / "store"
    for model, version, kind in (("mlp", 1, "torchserve"), ("mlp", 2, "tfserving"), ("cnn", 3, "torchserve"),
                                 ("cnn", 10, "tfserving"), ("cnn", 11, "tfserving")):  # fmt: skip
        make_version(store, model, version, kind, {})
    (store / "mlp" / "0").mkdir()  # not a version
    (store / "mlp" / "7").mkdir()  # no artifact yet
    (store / ".tfserving").mkdir()
    (store / "_bad name").mkdir()
    gateway_view = [(v.model, v.version, v.backend) for v in scan_store(store)]
    assert stack_init.scan(store) == gateway_view

    for model, version, backend in gateway_view:
        if backend == "torchserve":
            assert stack_init.link(store, model, version) == link_archive(store, model, version)

    text = stack_init.tfserving_config(gateway_view, "/models")
    parsed = text_format.Parse(text, pb.ModelServerConfig())
    keep = {m: {v for mm, v, b in gateway_view if mm == m and b == "tfserving"} for m, _, _ in gateway_view}
    expected = TFServingBackend("tfserving:8500", base_path="/models").model_server_config(keep).config
    assert parsed == expected


# Names a lax check lets through: `$` matches before a final newline, str.isdigit() and int() take
# other scripts' digits, and nothing else bounds the length.
ODD_MODEL_NAMES = ["evil\n", "evil\r", "tab\tname", "caf\u00e9", "a" * 129, "-lead", ".hidden", "m\u0661", ""]
ODD_VERSIONS = ["1\n", "\u0661", "\uff11", "01", "0", "+1", " 1", "1.0", "9" * 19, str(2**63)]


def test_stack_init_keeps_the_gateway_name_rule():
    stack_init = load_stack_init()
    assert stack_init.NAME_RE.pattern == MODEL_NAME_PATTERN
    for name in [*ODD_MODEL_NAMES, "mlp", "a" * 128, "m.1_x-y"]:
        assert bool(stack_init.NAME_RE.fullmatch(name)) == is_model_name(name), repr(name)
    for version in [*ODD_VERSIONS, "1", "12", str(2**63 - 1)]:
        assert stack_init.is_version(version) == (canonical_version(version) is not None), repr(version)
    assert not any(is_model_name(n) for n in ODD_MODEL_NAMES)
    assert not any(canonical_version(v) is not None for v in ODD_VERSIONS)


def test_odd_names_in_the_store_are_skipped_by_both(tmp_path):
    stack_init = load_stack_init()
    store = tmp_path / "store"
    make_version(store, "mlp", 1, "torchserve", {})
    for name in ODD_MODEL_NAMES:
        if name:
            make_version(store, name, 1, "tfserving", {})
    for version in ODD_VERSIONS:
        path = store / "mlp" / version
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"")
    assert [(v.model, v.version, v.backend) for v in scan_store(store)] == [("mlp", 1, "torchserve")]
    assert stack_init.scan(store) == [("mlp", 1, "torchserve")]
