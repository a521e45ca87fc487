"""What the deployment tests share: the real tools (Docker Compose, kubectl's kustomize, hadolint,
installed by the dev extra), the rendered compose and Kubernetes configurations, and the gateway's
own routes and settings to check them against. Nothing here needs a network or a Docker engine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from tests.fakes import FakeBackend

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_CPU_FILE = ROOT / "docker-compose.cpu.yml"
DOCKERFILE = ROOT / "deploy" / "docker" / "gateway.Dockerfile"
K8S = ROOT / "k8s"
OVERLAYS = ("gpu", "cpu")
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "serving-stacks.json"
TS_CONFIG = ROOT / "deploy" / "docker" / "torchserve" / "config.properties"
TF_MONITORING = ROOT / "deploy" / "tfserving" / "monitoring.config"
# The Kubernetes version whose API schemas (from kubernetes-validate) every object must satisfy.
K8S_VERSION = "1.32"
# Values the compose file requires from the environment; the tests give dummies.
COMPOSE_DUMMY_ENV = {
    "GATEWAY_ADMIN_TOKEN": "test-admin-token-0123456789",
    "GRAFANA_ADMIN_PASSWORD": "test-password",
    "POSTGRES_PASSWORD": "test-db-password",
}


def tool(name: str) -> str:
    """A command installed by the dev extra (beside this interpreter), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `pip install -e '.[dev]'` installs it (see pyproject.toml)")
    return found


def run(argv: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def compose_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment for `docker-compose`: none of the caller's GATEWAY_*/compose variables."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, "DOCKER_CONFIG": os.devnull, **(extra or {})}


def compose_config(
    *files: Path, env: dict[str, str] | None = None, profiles: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` (the real Compose, offline): validates against the Compose
    Specification schema, interpolates, merges the files and prints the result as JSON."""
    # --env-file /dev/null: a developer's .env beside the compose file never leaks into the tests.
    argv = [tool("docker-compose"), "--project-directory", str(ROOT), "--env-file", os.devnull]
    for f in files:
        argv += ["-f", str(f)]
    for p in profiles:
        argv += ["--profile", p]
    return run([*argv, "config", "--format", "json"], env=compose_env(env))


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """The GPU compose configuration as Compose resolves it (every profile's services included)."""
    done = compose_config(COMPOSE_FILE, env=COMPOSE_DUMMY_ENV, profiles=("postgres",))
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="session")
def compose_cpu() -> dict[str, Any]:
    done = compose_config(COMPOSE_FILE, COMPOSE_CPU_FILE, env=COMPOSE_DUMMY_ENV)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="session")
def compose_raw() -> dict[str, Any]:
    """The compose file as written (before interpolation)."""
    result: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return result


def kustomize_build(overlay: Path) -> subprocess.CompletedProcess[str]:
    """`kubectl kustomize` exactly as `kubectl apply -k` builds: kustomize inside kubectl, with its
    default load restrictor (no file read from outside the kustomization's own directory)."""
    return run([tool("kubectl"), "kustomize", str(overlay)])


def kustomize_objects(overlay: Path) -> list[dict[str, Any]]:
    """The objects an overlay builds to (the build must succeed)."""
    done = kustomize_build(overlay)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


# The lines each overlay carries, commented out, that enable the optional monitoring component.
MONITORING_LINES = "# components:\n#   - ../../components/monitoring\n"


def copy_k8s(dest: Path) -> Path:
    """A copy of k8s/ under ``dest`` (to edit an overlay as a user would); returns the copy."""
    shutil.copytree(K8S, dest / "k8s")
    return dest / "k8s"


def enable_monitoring(overlay: Path) -> None:
    """Uncomment the overlay's documented `components:` lines, as docs/deployment.md says to."""
    kustomization = overlay / "kustomization.yaml"
    text = kustomization.read_text()
    assert MONITORING_LINES in text, f"{kustomization}: no commented lines that enable the monitoring component"
    kustomization.write_text(text.replace(MONITORING_LINES, MONITORING_LINES.replace("# ", "")))


@pytest.fixture(scope="session")
def k8s() -> dict[str, list[dict[str, Any]]]:
    """Every overlay as it is committed, built as `kubectl apply -k` builds it."""
    return {name: kustomize_objects(K8S / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def k8s_monitoring(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Every overlay with the monitoring component enabled by its documented lines."""
    tree = copy_k8s(tmp_path_factory.mktemp("k8s-monitoring"))
    built = {}
    for name in OVERLAYS:
        enable_monitoring(tree / "overlays" / name)
        built[name] = kustomize_objects(tree / "overlays" / name)
    return built


@pytest.fixture(scope="session")
def has_route(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], bool]]:
    """Whether the gateway app routes ``GET path`` (built with backend doubles, not started: an
    unrouted path answers the app's own "no route" 404, a routed one anything else)."""
    tmp = tmp_path_factory.mktemp("routes")
    settings = Settings(model_store=tmp / "store", database_url=f"sqlite:///{tmp / 'registry.db'}")
    app = create_app(
        settings, backends={"torchserve": FakeBackend("torchserve"), "tfserving": FakeBackend("tfserving")}
    )
    client = TestClient(app)

    def routed(path: str) -> bool:
        response = client.get(path)
        return not (response.status_code == 404 and response.json().get("error", "").startswith("no route"))

    assert not routed("/no/such/route/here")
    yield routed
    client.close()


@pytest.fixture(scope="session")
def prometheus() -> dict[str, Any]:
    if not PROMETHEUS_CONFIG.is_file():
        pytest.skip(
            f"{PROMETHEUS_CONFIG.relative_to(ROOT)} does not exist yet (another change adds it); "
            "the scrape targets are checked once it does"
        )
    result: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    return result


@dataclass(frozen=True)
class ScrapeTarget:
    job: str
    host: str
    port: int
    path: str


def job_targets(job: dict[str, Any]) -> list[str]:
    """A scrape job's ``host:port`` targets: static ones, and DNS names (type A) with their port."""
    found = [str(t) for static in job.get("static_configs") or [] for t in static.get("targets") or []]
    for sd in job.get("dns_sd_configs") or []:
        assert sd.get("type") == "A" and "port" in sd, sd  # an A lookup needs the port it scrapes
        found.extend(f"{name}:{sd['port']}" for name in sd["names"])
    return found


def scrape_targets(config: dict[str, Any]) -> list[ScrapeTarget]:
    """Every target of a Prometheus configuration, with its job's metrics path."""
    found = []
    for job in config.get("scrape_configs") or []:
        path = job.get("metrics_path", "/metrics")
        for target in job_targets(job):
            host, _, port = target.rpartition(":")
            found.append(ScrapeTarget(job["job_name"], host, int(port), path))
    return found


def properties(path: Path) -> dict[str, str]:
    """A Java .properties file as TorchServe reads it (key=value lines, # comments)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def flags(argv: list[str]) -> dict[str, str]:
    """``--name=value`` arguments of a command line as a mapping (``--flag`` alone: "")."""
    out = {}
    for arg in argv:
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            out[name] = value
    return out


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    for c in pod_spec(deployment)["containers"]:
        if c["name"] == name:
            result: dict[str, Any] = c
            return result
    raise AssertionError(f"no container {name} in {deployment['metadata']['name']}")


def containers_of(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container of a Deployment's pods, init containers included."""
    spec = pod_spec(deployment)
    result: list[dict[str, Any]] = spec["containers"] + spec.get("initContainers", [])
    return result


def expand(value: str, env: dict[str, Any]) -> str:
    """A command or argument as the kubelet runs it: ``$(NAME)`` replaced by the container's plain
    env value NAME (a reference it cannot resolve stays as written, as in Kubernetes)."""

    def resolve(match: re.Match[str]) -> str:
        found = env.get(match.group(1))
        return found if isinstance(found, str) else match.group(0)

    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", resolve, value)


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    """A container's env as name -> value (plain values) or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def resolved_env(c: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, Any]:
    """``env_of``, with each ``configMapKeyRef`` replaced by the value the built ConfigMap holds (an
    optional key it lacks leaves the variable unset, as in Kubernetes); other references stay."""
    config_maps = objects(docs, "ConfigMap")
    out = {}
    for name, value in env_of(c).items():
        ref = value.get("configMapKeyRef") if isinstance(value, dict) else None
        if ref is None:
            out[name] = value
            continue
        data = config_maps[ref["name"]].get("data", {})
        if ref["key"] in data:
            out[name] = data[ref["key"]]
        else:
            assert ref.get("optional") is True, f"{name}: ConfigMap {ref['name']} has no key {ref['key']}"
    return out


def mount_at(c: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume mount of a container at exactly ``path``."""
    (mount,) = [m for m in c.get("volumeMounts", []) if m["mountPath"].rstrip("/") == path.rstrip("/")]
    result: dict[str, Any] = mount
    return result


def volume_named(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (volume,) = [v for v in spec["volumes"] if v["name"] == name]
    result: dict[str, Any] = volume
    return result


def gpu_memory_fractions(docs: list[dict[str, Any]]) -> dict[str, float]:
    """Each backend's GPU memory bound as its process reads it: TF Serving's flag (after the
    kubelet expands $(VAR) references), the example TorchServe handler's TS_GPU_MEMORY_FRACTION."""
    deployments = objects(docs, "Deployment")
    tf = container(deployments["tfserving"], "tfserving")
    tf_flags = flags([expand(arg, env_of(tf)) for arg in tf["args"]])
    ts_env = env_of(container(deployments["torchserve"], "torchserve"))
    return {
        "tfserving": float(tf_flags["per_process_gpu_memory_fraction"]),
        "torchserve": float(ts_env["TS_GPU_MEMORY_FRACTION"]),
    }
