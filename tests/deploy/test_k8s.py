"""k8s/: each overlay built as `kubectl apply -k` builds it (kustomize inside kubectl, default load
restrictor), with and without the optional monitoring component, every object validated against
the Kubernetes API schemas of K8S_VERSION (kubernetes-validate, strict: no unknown fields), the
Prometheus Operator objects checked for the shape the operator reads. Edits a user makes (an image,
the artifact store) are made to a copy of k8s/ and built again. The backends: Deployments of
several replicas, each pod with the agent as a sidecar (its command line parsed by the real CLI and
turned into the real adapter), an emptyDir of its own, a PodDisruptionBudget and an HPA on the
per-replica in-flight metric through prometheus-adapter."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from kubernetes_validate import validate

from gateway.agent.agent import READY_FILE
from gateway.agent.run import make_backend
from gateway.backends.tfserving.client import TFServingBackend
from gateway.backends.tfserving.protos import serving_pb2 as pb
from gateway.backends.torchserve import TorchServeBackend
from gateway.cli import build_parser
from gateway.settings import Settings
from tests.deploy.conftest import (
    DASHBOARD,
    K8S,
    K8S_VERSION,
    OVERLAYS,
    ROOT,
    TF_MONITORING,
    TS_CONFIG,
    container,
    containers_of,
    copy_k8s,
    env_of,
    expand,
    flags,
    gpu_memory_fractions,
    kustomize_build,
    kustomize_objects,
    mount_at,
    objects,
    pod_spec,
    properties,
    resolved_env,
    volume_named,
)

BACKENDS = ("torchserve", "tfserving")
OPERATOR_API = "monitoring.coreos.com/v1"
CRD_KINDS = {(OPERATOR_API, "ServiceMonitor"), (OPERATOR_API, "PodMonitor"), (OPERATOR_API, "PrometheusRule")}
# What the monitoring component adds: (kind, name).
MONITORING_OBJECTS = {
    ("ServiceMonitor", "gateway"),
    ("ServiceMonitor", "torchserve"),
    ("ServiceMonitor", "tfserving"),
    ("PrometheusRule", "twin-stack"),
    ("ConfigMap", "grafana-dashboards"),
}


def key(doc):
    return doc["kind"], doc["metadata"]["name"]


def all_pod_specs(docs):
    return {name: pod_spec(d) for name, d in objects(docs, "Deployment").items()}


# --- applies on a stock cluster -----------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_builds_as_kubectl_apply_k_does(overlay):
    """No flag: `kubectl apply -k` cannot lift the load restrictor, so no kustomization may read a
    file outside its own directory."""
    done = kustomize_build(K8S / "overlays" / overlay)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("monitoring", [False, True], ids=["plain", "monitoring"])
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_matches_the_kubernetes_schemas(k8s, k8s_monitoring, overlay, monitoring):
    checked = 0
    for doc in (k8s_monitoring if monitoring else k8s)[overlay]:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        validate(doc, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_without_the_monitoring_component_no_operator_object_is_applied(k8s, overlay):
    """A cluster without the Prometheus Operator's CRDs refuses ServiceMonitor and PrometheusRule."""
    assert not [key(d) for d in k8s[overlay] if d["apiVersion"].startswith("monitoring.coreos.com/")]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_monitoring_component_adds_the_monitoring_objects_and_changes_nothing_else(k8s, k8s_monitoring, overlay):
    plain = {key(d): d for d in k8s[overlay]}
    monitored = {key(d): d for d in k8s_monitoring[overlay]}
    assert set(monitored) - set(plain) == MONITORING_OBJECTS
    assert {k: monitored[k] for k in plain} == plain
    for k in MONITORING_OBJECTS:
        metadata = monitored[k]["metadata"]
        assert metadata["namespace"] == "twin-stack", k
        assert metadata["labels"]["app.kubernetes.io/part-of"] == "twin-stack", k


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitors_have_the_operators_shape(k8s_monitoring, overlay):
    docs = k8s_monitoring[overlay]
    services = objects(docs, "Service")
    monitors = objects(docs, "ServiceMonitor")
    assert set(monitors) == {"gateway", "torchserve", "tfserving"}
    for name, monitor in monitors.items():
        assert monitor["apiVersion"] == OPERATOR_API
        assert set(monitor) <= {"apiVersion", "kind", "metadata", "spec"}
        spec = monitor["spec"]
        assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
        selected = [
            s
            for s in services.values()
            if spec["selector"]["matchLabels"].items() <= s["metadata"].get("labels", {}).items()
        ]
        assert [s["metadata"]["name"] for s in selected] == [name]
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
            assert endpoint["port"] in port_names and endpoint["path"].startswith("/")


# --- generated copies ---------------------------------------------------------------------------
def test_the_generated_files_under_k8s_match_their_sources():
    """The copies of deploy/ files the kustomizations read, and the PrometheusRule."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "k8s_files.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_a_changed_source_makes_the_check_fail_until_the_files_are_written(tmp_path):
    """On a copy of the tree: an edit to deploy/docker/torchserve/config.properties is reported, and
    writing the files brings the copy under k8s/ in line."""
    for part in ("k8s", "deploy/docker", "deploy/tfserving", "deploy/grafana/dashboards", "deploy/prometheus"):
        shutil.copytree(ROOT / part, tmp_path / part)
    shutil.copy2(ROOT / "deploy" / "k8s_files.py", tmp_path / "deploy" / "k8s_files.py")
    source = tmp_path / "deploy" / "docker" / "torchserve" / "config.properties"
    source.write_text(source.read_text() + "default_workers_per_model=2\n")
    script = [sys.executable, str(tmp_path / "deploy" / "k8s_files.py")]
    stale = subprocess.run([*script, "--check"], capture_output=True, text=True)
    assert stale.returncode == 1 and "k8s/base/files/config.properties is out of date" in stale.stderr
    assert subprocess.run(script, capture_output=True, text=True).returncode == 0
    copy = properties(tmp_path / "k8s" / "base" / "files" / "config.properties")
    assert copy == properties(source) | {"management_address": "http://127.0.0.1:8081"}
    assert subprocess.run([*script, "--check"], capture_output=True, text=True).returncode == 0


def test_the_k8s_torchserve_config_differs_from_composes_only_in_the_loopback_management_api():
    """In a pod, the agent beside TorchServe is its management API's only client."""
    k8s_config = properties(K8S / "base" / "files" / "config.properties")
    assert urllib.parse.urlsplit(k8s_config["management_address"]).hostname == "127.0.0.1"
    compose_config = properties(TS_CONFIG)
    assert {k: v for k, v in k8s_config.items() if k != "management_address"} == {
        k: v for k, v in compose_config.items() if k != "management_address"
    }
    port = urllib.parse.urlsplit(compose_config["management_address"]).port
    assert urllib.parse.urlsplit(k8s_config["management_address"]).port == port


def test_the_prometheus_rules_file_is_generated_from_the_rule_files():
    done = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "prometheus" / "k8s_rules.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


# --- images -------------------------------------------------------------------------------------
def images_block(overlay: Path) -> list[dict]:
    return yaml.safe_load((overlay / "kustomization.yaml").read_text())["images"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_images_block_names_every_image_the_pods_run(k8s, overlay):
    block = images_block(K8S / "overlays" / overlay)
    assert {entry["name"] for entry in block} == {"twin-stack-gateway", "pytorch/torchserve", "tensorflow/serving"}
    named = {f"{entry['newName']}:{entry['newTag']}" for entry in block}
    used = {c["image"] for d in objects(k8s[overlay], "Deployment").values() for c in containers_of(d)}
    assert used == named


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_images_block_moves_every_container_to_your_registry(tmp_path, overlay):
    tree = copy_k8s(tmp_path)
    kustomization = tree / "overlays" / overlay / "kustomization.yaml"
    document = yaml.safe_load(kustomization.read_text())
    moved = {}
    for entry in document["images"]:
        entry["newName"] = f"registry.test/team/{entry['name'].rsplit('/', 1)[-1]}"
        entry["newTag"] = "test-1"
        moved[entry["name"]] = f"{entry['newName']}:test-1"
    kustomization.write_text(yaml.safe_dump(document))
    deployments = objects(kustomize_objects(tree / "overlays" / overlay), "Deployment")
    images = {(name, c["name"]): c["image"] for name, d in deployments.items() for c in containers_of(d)}
    assert images == {
        ("gateway", "gateway"): moved["twin-stack-gateway"],
        ("tfserving", "tfserving"): moved["tensorflow/serving"],
        ("tfserving", "agent"): moved["twin-stack-gateway"],  # `gateway agent`, from the gateway image
        ("torchserve", "torchserve"): moved["pytorch/torchserve"],
        ("torchserve", "agent"): moved["twin-stack-gateway"],
    }


# --- storage: no shared volume ----------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_persistent_volume_claim_anywhere(k8s, overlay):
    """No ReadWriteMany claim, no claim at all: each backend pod keeps its versions in its own
    emptyDir, the gateway its staging area in its own; the artifact store is the one shared place."""
    docs = k8s[overlay]
    assert not objects(docs, "PersistentVolumeClaim")
    assert "ReadWriteMany" not in str(docs) and "persistentVolumeClaim" not in str(docs)
    for name, spec in all_pod_specs(docs).items():
        for volume in spec["volumes"]:
            assert set(volume) == {"name", "emptyDir"} or set(volume) == {"name", "configMap"}, (name, volume)
            if "emptyDir" in volume:
                assert volume["emptyDir"]["sizeLimit"], (name, volume["name"])  # a node's disk, bounded


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_backend_pod_shares_one_emptydir_between_backend_and_agent(k8s, overlay):
    """The agent writes the versions it pulls into --model-dir; the backend reads the same volume at
    the same path (TorchServe's --model-store, TF Serving's base paths, which the agent names)."""
    for backend in BACKENDS:
        deployment = objects(k8s[overlay], "Deployment")[backend]
        spec = pod_spec(deployment)
        assert [c["name"] for c in spec["containers"]] == [backend, "agent"]  # the gpu patch targets index 0
        agent = container(deployment, "agent")
        model_dir = flags(agent["args"])["model-dir"]
        agent_mount = mount_at(agent, model_dir)
        backend_mount = mount_at(container(deployment, backend), model_dir)
        assert agent_mount["name"] == backend_mount["name"], backend
        assert "emptyDir" in volume_named(spec, agent_mount["name"]), backend
        assert not agent_mount.get("readOnly"), backend  # the agent is the one writer
        assert backend_mount["readOnly"] is True, backend


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_artifact_store_is_named_in_one_place_in_the_overlay(k8s, tmp_path, overlay):
    """The gateway and every agent read the bucket, prefix and endpoint from one ConfigMap, built
    from the base's defaults merged with the overlay's artifact-store.env; credentials from a Secret."""

    def store_env(docs):
        found = {}
        for dname, deployment in objects(docs, "Deployment").items():
            for c in pod_spec(deployment)["containers"]:
                if c["name"] in ("gateway", "agent"):
                    found[(dname, c["name"])] = resolved_env(c, docs)
        return found

    readers = store_env(k8s[overlay])
    assert set(readers) == {("gateway", "gateway"), ("torchserve", "agent"), ("tfserving", "agent")}
    for who, env in readers.items():
        assert env["GATEWAY_ARTIFACT_STORE"] == "s3", who
        assert env["GATEWAY_ARTIFACT_S3_BUCKET"], who
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key]["secretKeyRef"]["name"] == "artifact-store-credentials", (who, key)
        keys = (
            "GATEWAY_ARTIFACT_S3_BUCKET",
            "GATEWAY_ARTIFACT_S3_PREFIX",
            "GATEWAY_ARTIFACT_S3_ENDPOINT",
            "AWS_REGION",
        )
        assert {k: env.get(k) for k in keys} == {k: readers["gateway", "gateway"].get(k) for k in keys}, who

    tree = copy_k8s(tmp_path)
    env_file = tree / "overlays" / overlay / "artifact-store.env"
    kept = [line for line in env_file.read_text().splitlines() if not line.startswith(("bucket=", "endpoint="))]
    env_file.write_text("\n".join([*kept, "bucket=test-bucket", "endpoint=https://s3.test:9000", ""]))
    for who, env in store_env(kustomize_objects(tree / "overlays" / overlay)).items():
        assert env["GATEWAY_ARTIFACT_S3_BUCKET"] == "test-bucket", who
        assert env["GATEWAY_ARTIFACT_S3_ENDPOINT"] == "https://s3.test:9000", who


# --- GPUs ---------------------------------------------------------------------------------------
def test_the_gpu_overlay_gives_each_backend_a_gpu_without_gpu_operator_labels(k8s):
    """The nvidia.com/gpu limit alone keeps a pod off nodes without a GPU; node labels such as
    nvidia.com/gpu.present exist only where the GPU Operator (GPU Feature Discovery) runs."""
    deployments = objects(k8s["gpu"], "Deployment")
    for name in BACKENDS:
        spec = pod_spec(deployments[name])
        c = container(deployments[name], name)
        assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == 1, name
        assert c["image"].endswith("-gpu"), c["image"]
        assert "nodeSelector" not in spec and "affinity" not in spec, name
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert "nvidia.com/gpu" not in str(pod_spec(deployments["gateway"]))
    assert "gpu.present" not in str(k8s["gpu"])


def test_the_gpu_overlay_bounds_the_gpu_memory_of_both_stacks(k8s):
    fractions = gpu_memory_fractions(k8s["gpu"])
    assert all(0 < f < 1 for f in fractions.values()), fractions
    # Both fit on one GPU when the device plugin shares it (time-slicing, MPS).
    assert sum(fractions.values()) <= 1, fractions


def test_the_cpu_overlay_asks_for_no_gpu(k8s):
    assert "nvidia.com/gpu" not in str(k8s["cpu"])
    assert "gpu_memory_fraction" not in str(k8s["cpu"]).lower()
    deployments = objects(k8s["cpu"], "Deployment")
    assert container(deployments["torchserve"], "torchserve")["image"].endswith("-cpu")
    assert not container(deployments["tfserving"], "tfserving")["image"].endswith("-gpu")


# --- probes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_torchserve_is_restarted_only_when_its_frontend_is_dead(k8s, overlay):
    """TorchServe 0.12 answers 500 on /ping while one model's workers recover: readiness takes the
    pod out of the Service then, liveness and start-up only check the inference port."""
    c = container(objects(k8s[overlay], "Deployment")["torchserve"], "torchserve")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("livenessProbe", "startupProbe"):
        assert set(c[probe]) & {"httpGet", "exec", "grpc"} == set(), probe
        assert ports[c[probe]["tcpSocket"]["port"]] == ports["inference"], probe
    readiness = " ".join(c["readinessProbe"]["exec"]["command"])
    assert f"127.0.0.1:{ports['inference']}/ping" in readiness


# --- security, scaling, secrets, network --------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_locked_down(k8s, overlay):
    for name, spec in all_pod_specs(k8s[overlay]).items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        writable = {v["name"] for v in spec["volumes"] if "emptyDir" in v or "persistentVolumeClaim" in v}
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert "limits" in c["resources"] and "requests" in c["resources"], (name, c["name"])
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert mounts.get("/tmp") in writable, (name, c["name"], "no writable /tmp")


def test_the_namespace_enforces_the_restricted_pod_security_standard(k8s):
    (namespace,) = objects(k8s["gpu"], "Namespace").values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(d["metadata"].get("namespace", namespace["metadata"]["name"]) == "twin-stack" for d in k8s["gpu"])


def test_the_gateway_scales_on_postgresql_with_probes_hpa_and_pdb(k8s, has_route):
    docs = k8s["gpu"]
    gateway = objects(docs, "Deployment")["gateway"]
    c = container(gateway, "gateway")
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert has_route(c[probe]["httpGet"]["path"]), probe
    env = env_of(c)
    assert env["GATEWAY_DATABASE_URL"]["secretKeyRef"] == {"name": "gateway-secrets", "key": "database-url"}
    hpa = objects(docs, "HorizontalPodAutoscaler")["gateway"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in gateway["spec"]  # the HPA owns the count
    pdb = objects(docs, "PodDisruptionBudget")["gateway"]
    assert pdb["spec"]["selector"]["matchLabels"] == gateway["spec"]["selector"]["matchLabels"]


def test_secrets_are_referenced_never_committed(k8s):
    for overlay, docs in k8s.items():
        assert not objects(docs, "Secret"), overlay
        for name, spec in all_pod_specs(docs).items():
            for c in spec["containers"]:
                for key, value in env_of(c).items():
                    if any(word in key for word in ("TOKEN", "PASSWORD", "DATABASE_URL", "SECRET", "ACCESS_KEY")):
                        assert isinstance(value, dict) and "secretKeyRef" in value, (name, key)


def test_network_policies_keep_the_backends_behind_the_gateway(k8s):
    policies = objects(k8s["gpu"], "NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    gateway_pods = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    expected = {
        # backend: (ports only the gateway reaches, ports only Prometheus reaches); TorchServe's
        # management API (8081) listens on loopback only: no rule admits it
        "torchserve": ({8080}, {8082}),
        "tfserving": ({8500}, {8501}),  # 8500 carries ModelService too: the gateway pods only
    }
    gateway = container(objects(k8s["gpu"], "Deployment")["gateway"], "gateway")
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    gateway_labels = gateway_pods["podSelector"]["matchLabels"]
    (policy,) = [p["spec"] for p in policies.values() if p["spec"]["podSelector"].get("matchLabels") == gateway_labels]
    by_source = {str(rule.get("from", "anyone")): {p["port"] for p in rule["ports"]} for rule in policy["ingress"]}
    assert by_source == {"anyone": {ports["http"], ports["grpc"]}, str([prometheus]): {ports["metrics"]}}
    for backend, (from_gateway, from_prometheus) in expected.items():
        (policy,) = [
            p["spec"]
            for p in policies.values()
            if p["spec"]["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": backend}
        ]
        by_source = {str(rule["from"]): {p["port"] for p in rule["ports"]} for rule in policy["ingress"]}
        assert by_source == {str([gateway_pods]): from_gateway, str([prometheus]): from_prometheus}, backend
    # Egress of the backend pods: what their agents need (DNS, the registry, the artifact store).
    (egress,) = [p["spec"] for p in policies.values() if "Egress" in p["spec"]["policyTypes"]]
    assert egress["podSelector"] == {"matchLabels": {"app.kubernetes.io/component": "backend"}}
    selected = {
        name
        for name, d in objects(k8s["gpu"], "Deployment").items()
        if egress["podSelector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    }
    assert selected == set(BACKENDS)
    allowed = {(p["port"], p["protocol"]) for rule in egress["egress"] for p in rule["ports"]}
    assert allowed == {(53, "UDP"), (53, "TCP"), (5432, "TCP"), (443, "TCP"), (9000, "TCP")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_both_deployments_run_the_same_alert_and_recording_rules(k8s_monitoring, overlay):
    rules = objects(k8s_monitoring[overlay], "PrometheusRule")
    assert set(rules) == {"twin-stack"}
    rule = rules["twin-stack"]
    assert set(rule) <= {"apiVersion", "kind", "metadata", "spec"} and set(rule["spec"]) == {"groups"}
    compose = [
        g
        for f in sorted((ROOT / "deploy/prometheus/rules").glob("*.yml"))
        for g in yaml.safe_load(f.read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == compose
    # The alerts name scrape jobs; under the operator a ServiceMonitor's job is its Service's name.
    assert {"gateway", "torchserve", "tfserving"} <= set(objects(k8s_monitoring[overlay], "Service"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grafana_dashboard_is_a_configmap_for_the_sidecar(k8s_monitoring, overlay):
    dashboards = objects(k8s_monitoring[overlay], "ConfigMap")["grafana-dashboards"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["data"] == {DASHBOARD.name: DASHBOARD.read_text()}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_runs_one_worker_per_cpu_it_requests(k8s, overlay):
    c = container(objects(k8s[overlay], "Deployment")["gateway"], "gateway")
    workers = int(env_of(c)["GATEWAY_WORKERS"])
    assert workers >= 2
    assert c["resources"]["requests"]["cpu"] == c["resources"]["limits"]["cpu"] == str(workers)


# --- backends: replicas, agents, disruption, autoscaling ----------------------------------------
ADAPTER_VALUES = K8S / "components" / "monitoring" / "prometheus-adapter-values.yaml"
LOAD_METRIC = "gateway_replica_inflight"
# What the downward API gives the agent's $(...) references, and sample values of a pod.
DOWNWARD = {"POD_NAME": "metadata.name", "POD_IP": "status.podIP", "NODE_NAME": "spec.nodeName"}
SAMPLE_POD = {"POD_NAME": "torchserve-6d9f7c5b8-x2x9q", "POD_IP": "10.42.1.17", "NODE_NAME": "gpu-node-3"}


def setting_default(name: str, fallback: float) -> float:
    """A setting's default; ``fallback`` (the value the issue-15 contract names) until it exists."""
    field = Settings.model_fields.get(name)
    return float(field.default) if field is not None else fallback


def management_port(docs, backend: str) -> int:
    """Where the backend's management API listens in its pod, from the backend's own configuration."""
    if backend == "torchserve":
        return urllib.parse.urlsplit(
            properties(K8S / "base" / "files" / "config.properties")["management_address"]
        ).port
    return int(flags(container(objects(docs, "Deployment")["tfserving"], "tfserving")["args"])["port"])


def agent_command(docs, backend: str):
    """The agent's command line as the kubelet runs it in a sample pod, parsed by `gateway agent`'s
    own parser, and the settings its environment gives (ConfigMap values resolved)."""
    deployment = objects(docs, "Deployment")[backend]
    agent = container(deployment, "agent")
    env = env_of(agent)
    assert {k: env[k]["fieldRef"]["fieldPath"] for k in DOWNWARD} == DOWNWARD
    argv = [expand(arg, SAMPLE_POD) for arg in agent["args"]]
    args = build_parser().parse_args(argv)
    assert args.func.__name__ == "_agent", argv  # the `gateway agent` subcommand
    plain = {
        k.removeprefix("GATEWAY_").lower(): v
        for k, v in resolved_env(agent, docs).items()
        if k.startswith("GATEWAY_") and isinstance(v, str)
    }
    settings = Settings(_env_file=None, **plain)  # type: ignore[call-arg]
    return args, settings


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_hpas_own_the_backends_replica_counts(k8s, overlay):
    """Several replicas of each stack, counted by its HPA (no replicas field for `apply` to reset);
    the gpu overlay runs two of each."""
    deployments, hpas = objects(k8s[overlay], "Deployment"), objects(k8s[overlay], "HorizontalPodAutoscaler")
    for backend in BACKENDS:
        assert "replicas" not in deployments[backend]["spec"], backend
        spec = hpas[backend]["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": backend}
        assert 2 <= spec["minReplicas"] < spec["maxReplicas"], backend
        if overlay == "gpu":
            assert spec["minReplicas"] == 2, backend
        strategy = deployments[backend]["spec"]["strategy"]
        assert strategy["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}, backend  # no extra GPU
        assert deployments[backend]["spec"]["minReadySeconds"] > 0, backend


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_stack_scales_on_its_replicas_in_flight_calls_through_prometheus_adapter(k8s, overlay):
    hpas = objects(k8s[overlay], "HorizontalPodAutoscaler")
    for backend in BACKENDS:
        (metric,) = hpas[backend]["spec"]["metrics"]
        assert metric["type"] == "Pods", backend
        assert metric["pods"]["metric"] == {"name": LOAD_METRIC}, backend
        assert metric["pods"]["target"]["type"] == "AverageValue", backend
        assert float(metric["pods"]["target"]["averageValue"]) > 0, backend
    # The adapter's rule serves exactly that metric, attributed to the backend pod the series'
    # `replica` label names (`pod` is the gateway pod it was scraped from), summed over gateways.
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    (rule,) = values["rules"]["custom"]
    assert rule["name"]["as"] == LOAD_METRIC and LOAD_METRIC in rule["seriesQuery"]
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "replica": {"resource": "pod"}}
    assert rule["metricsQuery"].startswith("sum(") and "by (<<.GroupBy>>)" in rule["metricsQuery"]


def test_the_gateway_exports_the_metric_the_hpas_read():
    metrics = (ROOT / "gateway" / "metrics.py").read_text()
    if LOAD_METRIC not in metrics:
        pytest.skip(f"gateway/metrics.py does not define {LOAD_METRIC} yet (the gateway side of issue 15 adds it)")
    from gateway import metrics as gateway_metrics

    gauges = [m for m in vars(gateway_metrics).values() if getattr(m, "_name", None) == LOAD_METRIC]
    assert gauges and "replica" in gauges[0]._labelnames


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_drain_takes_one_backend_replica_at_a_time(k8s, overlay):
    deployments = objects(k8s[overlay], "Deployment")
    pdbs = objects(k8s[overlay], "PodDisruptionBudget")
    hpas = objects(k8s[overlay], "HorizontalPodAutoscaler")
    for backend in BACKENDS:
        spec = pdbs[backend]["spec"]
        assert spec == {"maxUnavailable": 1, "selector": deployments[backend]["spec"]["selector"]}, backend
        assert hpas[backend]["spec"]["minReplicas"] > spec["maxUnavailable"], backend  # one always serves


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_agent_sidecar_runs_gateway_agent_against_its_own_pod(k8s, overlay):
    """Parsed by the CLI's parser and built into the adapter by the agent's own make_backend: the
    management API on loopback at the port the backend listens on, the inference address the pod
    IP at the port the gateway pods are let in on, the pod's name as replica id."""
    docs = k8s[overlay]
    policies = objects(docs, "NetworkPolicy")
    for backend in BACKENDS:
        deployment = objects(docs, "Deployment")[backend]
        args, settings = agent_command(docs, backend)
        assert args.stack == backend
        assert args.replica_id == SAMPLE_POD["POD_NAME"] and args.host_name == SAMPLE_POD["NODE_NAME"]
        management = urllib.parse.urlsplit(
            args.management_url if "//" in args.management_url else f"//{args.management_url}"
        )
        assert management.hostname == "127.0.0.1" and management.port == management_port(docs, backend), backend
        inference = urllib.parse.urlsplit(
            args.inference_url if "//" in args.inference_url else f"//{args.inference_url}"
        )
        assert inference.hostname == SAMPLE_POD["POD_IP"], backend
        ports = {p["containerPort"] for p in container(deployment, backend)["ports"]}
        admitted = {
            p["port"]
            for policy in policies.values()
            if policy["spec"]["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": backend}
            for rule in policy["spec"].get("ingress", [])
            if rule.get("from") == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}]
            for p in rule["ports"]
        }
        assert inference.port in ports and admitted == {inference.port}, backend
        assert settings.artifact_store == "s3" and settings.artifact_s3_bucket, backend
        adapter = make_backend(args.stack, args.management_url, args.inference_url, Path(args.model_dir), settings)
        model_dir = mount_at(container(deployment, backend), args.model_dir)["mountPath"]
        if backend == "torchserve":
            assert isinstance(adapter, TorchServeBackend)
            assert adapter.store == Path(model_dir) and adapter.management_url == args.management_url
        else:
            assert isinstance(adapter, TFServingBackend)
            # The base paths of the model list it sends are where TF Serving sees the pulled versions.
            assert adapter.base_path == model_dir and adapter.target == f"127.0.0.1:{management_port(docs, backend)}"
            assert adapter.config_file is None  # it writes no start-up file: the ConfigMap's is read once


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_backend_pod_is_ready_only_once_its_agent_holds_its_versions(k8s, overlay):
    """The agent container's readiness probe reads the agent's READY_FILE in its --model-dir, so a
    new or restarted replica is not available (rolling update, PodDisruptionBudget) while it loads."""
    for backend in BACKENDS:
        deployment = objects(k8s[overlay], "Deployment")[backend]
        args, _ = agent_command(k8s[overlay], backend)
        probe = container(deployment, "agent")["readinessProbe"]
        assert probe["exec"]["command"] == ["test", "-f", f"{args.model_dir}/{READY_FILE}"], backend
        assert probe["periodSeconds"] <= 10 and "livenessProbe" not in container(deployment, "agent"), backend
        # Available a little after ready: the gateways read the agent's reports every poll.
        assert 0 < deployment["spec"]["minReadySeconds"] <= 30, backend


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tfserving_starts_with_an_empty_model_list_the_agent_replaces(k8s, overlay):
    docs = k8s[overlay]
    deployment = objects(docs, "Deployment")["tfserving"]
    c = container(deployment, "tfserving")
    tf_flags = flags(c["args"])
    path = tf_flags["model_config_file"]
    mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
    volume = volume_named(pod_spec(deployment), mount["name"])
    text = objects(docs, "ConfigMap")[volume["configMap"]["name"]]["data"][path[len(mount["mountPath"]) + 1 :]]
    parsed = text_format.Parse(text, pb.ModelServerConfig())
    assert parsed.WhichOneof("config") == "model_config_list" and not parsed.model_config_list.config
    # The very list the agent's adapter sends when the stack should hold nothing.
    assert parsed == TFServingBackend("127.0.0.1:8500", base_path="/models").model_server_config({}).config
    # Read once: a poll of the file would reload this empty list over the agent's.
    assert int(tf_flags.get("model_config_file_poll_wait_seconds") or 0) == 0
    assert c["command"] == ["tensorflow_model_server"]
    mon_path = tf_flags["monitoring_config_file"]
    mon_mount = next(m for m in c["volumeMounts"] if mon_path.startswith(m["mountPath"].rstrip("/") + "/"))
    mon_volume = volume_named(pod_spec(deployment), mon_mount["name"])
    data = objects(docs, "ConfigMap")[mon_volume["configMap"]["name"]]["data"]
    assert data[mon_path[len(mon_mount["mountPath"]) + 1 :]] == TF_MONITORING.read_text()
    monitoring_path = re.search(r'path:\s*"([^"]+)"', TF_MONITORING.read_text()).group(1)  # type: ignore[union-attr]
    assert c["readinessProbe"]["httpGet"]["path"] == monitoring_path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_torchserve_starts_on_the_k8s_config_and_the_pods_store(k8s, overlay):
    docs = k8s[overlay]
    deployment = objects(docs, "Deployment")["torchserve"]
    c = container(deployment, "torchserve")
    argv = c["command"] + c["args"]
    serve = flags(argv)
    assert argv[0] == "torchserve" and "start" in serve and "foreground" in serve
    assert "enable-model-api" in serve and "disable-token-auth" in serve and "ncs" in serve
    config_path = serve["ts-config"]
    mount = next(m for m in c["volumeMounts"] if config_path.startswith(m["mountPath"].rstrip("/") + "/"))
    data = objects(docs, "ConfigMap")[volume_named(pod_spec(deployment), mount["name"])["configMap"]["name"]]["data"]
    k8s_config = K8S / "base" / "files" / "config.properties"
    assert data[config_path[len(mount["mountPath"]) + 1 :]] == k8s_config.read_text()
    args, settings = agent_command(docs, "torchserve")
    assert serve["model-store"] == properties(k8s_config)["model_store"] == args.model_dir
    assert settings.torchserve_workers >= 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_stopping_backend_serves_until_the_gateways_dropped_its_replica(k8s, overlay):
    """On SIGTERM the agent stops and its heartbeat with it; the gateways drop the replica after
    GATEWAY_REPLICA_TTL_SECONDS (read every GATEWAY_REPLICA_POLL_SECONDS). The backend's preStop
    sleep outlasts that, so no request is sent to a backend that already stopped listening."""
    lapse = setting_default("replica_ttl_seconds", 15.0) + setting_default("replica_poll_seconds", 1.0)
    for backend in BACKENDS:
        deployment = objects(k8s[overlay], "Deployment")[backend]
        command = container(deployment, backend)["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep" and float(command[1]) > lapse, backend
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] > float(command[1]) + 30, backend
        assert "lifecycle" not in container(deployment, "agent"), backend


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_routes_both_stacks_over_the_agents_replicas(k8s, overlay):
    docs = k8s[overlay]
    gateway = objects(docs, "Deployment")["gateway"]
    env = resolved_env(container(gateway, "gateway"), docs)
    assert set(env["GATEWAY_AGENT_STACKS"].split(",")) == set(BACKENDS)
    # No single backend address or management API for it to call any more.
    unused = {"GATEWAY_TORCHSERVE_URL", "GATEWAY_TORCHSERVE_MANAGEMENT_URL", "GATEWAY_TFSERVING_TARGET",
              "GATEWAY_TFSERVING_MODEL_BASE_PATH"}  # fmt: skip
    assert not unused & set(env), overlay
    # Its model store: staging and the signatures of what it deployed, nothing needed at start.
    store = mount_at(container(gateway, "gateway"), env["GATEWAY_MODEL_STORE"])
    assert "emptyDir" in volume_named(pod_spec(gateway), store["name"])
    # The backends' Services only carry their metrics (for Prometheus); traffic goes to pod IPs.
    for backend in BACKENDS:
        service = objects(docs, "Service")[backend]
        assert service["spec"]["clusterIP"] == "None", backend
        assert {p["name"] for p in service["spec"]["ports"]} == {"torchserve": {"metrics"}, "tfserving": {"rest"}}[
            backend
        ]
