"""k8s/: each overlay built as `kubectl apply -k` builds it (kustomize inside kubectl, default load
restrictor), with and without the optional monitoring component, every object validated against
the Kubernetes API schemas of K8S_VERSION (kubernetes-validate, strict: no unknown fields), the
Prometheus Operator objects checked for the shape the operator reads. Edits a user makes (an image,
the storage class) are made to a copy of k8s/ and built again."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes_validate import validate

from tests.deploy.conftest import (
    DASHBOARD,
    K8S,
    K8S_VERSION,
    OVERLAYS,
    ROOT,
    container,
    containers_of,
    copy_k8s,
    env_of,
    gpu_memory_fractions,
    kustomize_build,
    kustomize_objects,
    objects,
    pod_spec,
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
    assert (tmp_path / "k8s" / "base" / "files" / "config.properties").read_text() == source.read_text()
    assert subprocess.run([*script, "--check"], capture_output=True, text=True).returncode == 0


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
        ("tfserving", "model-config"): moved["twin-stack-gateway"],  # stack_init from the gateway image
        ("tfserving", "tfserving"): moved["tensorflow/serving"],
        ("torchserve", "torchserve"): moved["pytorch/torchserve"],
    }


# --- storage ------------------------------------------------------------------------------------
def test_the_model_store_is_one_read_write_many_claim(k8s):
    docs = k8s["gpu"]
    (claim,) = objects(docs, "PersistentVolumeClaim").values()
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name, spec in all_pod_specs(docs).items():
        claims = [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v]
        assert claims == [claim["metadata"]["name"]], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_storage_class_is_named_in_one_place_in_the_overlay(k8s, tmp_path, overlay):
    """Never the cluster's default class (single-node on managed clusters: an RWX claim stays
    Pending): the claim names its class, and the overlay's model-store.yaml is where to change it."""
    (claim,) = objects(k8s[overlay], "PersistentVolumeClaim").values()
    patch_file = Path("overlays") / overlay / "model-store.yaml"
    written = yaml.safe_load((K8S / patch_file).read_text())["spec"]["storageClassName"]
    assert claim["spec"]["storageClassName"] == written and written

    tree = copy_k8s(tmp_path)
    patch = yaml.safe_load((tree / patch_file).read_text())
    patch["spec"]["storageClassName"] = "test-rwx"
    (tree / patch_file).write_text(yaml.safe_dump(patch))
    (claim,) = objects(kustomize_objects(tree / "overlays" / overlay), "PersistentVolumeClaim").values()
    assert claim["spec"]["storageClassName"] == "test-rwx"


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
            if c["name"] != "model-config":  # the init container writes into its emptyDir only
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
                    if any(word in key for word in ("TOKEN", "PASSWORD", "DATABASE_URL")):
                        assert isinstance(value, dict) and "secretKeyRef" in value, (name, key)


def test_network_policies_keep_the_backends_behind_the_gateway(k8s):
    policies = objects(k8s["gpu"], "NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    gateway_pods = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    expected = {
        # backend: (ports only the gateway reaches, ports only Prometheus reaches)
        "torchserve": ({8080, 8081}, {8082}),
        "tfserving": ({8500}, {8501}),
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
        assert policy["egress"] == [] and "Egress" in policy["policyTypes"]
        by_source = {str(rule["from"]): {p["port"] for p in rule["ports"]} for rule in policy["ingress"]}
        assert by_source == {str([gateway_pods]): from_gateway, str([prometheus]): from_prometheus}, backend


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
