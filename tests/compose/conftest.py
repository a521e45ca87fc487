"""The whole compose stack on a real Docker engine, once for the tests/compose package.

The fixture starts ``dockerd`` if no engine runs (and stops what it started), builds the local
images (tests/compose/images.py; cached by label), seeds the model store from the repository's
example store minus the versions the tests deploy, runs ``docker compose up`` with the project's
docker-compose.yml + docker-compose.cpu.yml + tests/compose/docker-compose.test.yml, waits for the
health checks, and afterwards takes everything down again (volumes included), also on failure.

Traffic from the tests goes to 127.0.0.1 only (the gateway's published port); checks of what a
backend serves run inside its container (``docker exec``), on the container's own loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from localstack import free_port

from tests.compose import images as built
from tests.compose.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT / "model_store"
OVERRIDE = Path(__file__).with_name("docker-compose.test.yml")
COMPOSE_FILES = (ROOT / "docker-compose.yml", ROOT / "docker-compose.cpu.yml", OVERRIDE)
PROJECT = "twin-stack-compose-test"
LOGS = ROOT / ".local" / "compose" / "last-run.log"
TOKEN = "compose-admin-token-0123456789abcdef"
# Left out of the seeded store: the tests deploy them through the gateway.
DEPLOYED_LATER = ("mlp/3", "cnn/2")
BACKENDS = ("torchserve", "tfserving")
# Replicas per backend stack: `docker compose up --scale torchserve=2 --scale tfserving=2`.
REPLICAS = 2
# Bounds, not timings: every wait ends with a message. The health checks allow 180 s of start.
UP_DEADLINE_S = 900.0
# An HTTP/1.0 GET in bash: the status line and headers (CR removed), a blank line, then exactly
# Content-Length bytes of body (or all until the server closes). Arguments: port, path.
HTTP_GET = r"""
exec 3<>"/dev/tcp/127.0.0.1/$1"
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$2" >&3
length=-1
while IFS= read -r line <&3; do
    line=${line%$'\r'}
    printf '%s\n' "$line"
    [ -z "$line" ] && break
    case "${line,,}" in content-length:*) length=${line#*:}; length=${length// /} ;; esac
done
if [ "$length" -ge 0 ]; then head -c "$length" <&3; else cat <&3; fi
"""
HEALTHY_DEADLINE_S = 420.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/compose/" in str(item.fspath):
            item.add_marker(pytest.mark.compose)
            # The first test's setup builds the images (minutes on a fresh machine).
            item.add_marker(pytest.mark.timeout(3600))


def ensure_models() -> None:
    if not (STORE / "mlp" / "3").is_dir() or not (STORE / "cnn" / "2").is_dir():
        script = ROOT / "deploy" / "examples" / "build_models.py"
        subprocess.run([sys.executable, str(script), "--store", str(STORE)], check=True, timeout=900)


class ComposeStack:
    """``docker-compose`` for the test project, and what the tests ask of the running stack."""

    def __init__(self, docker: str, workdir: Path, seed: Path, port: int, grpc_port: int) -> None:
        self.docker = docker
        self.workdir = workdir
        self.seed = seed
        self.port = port
        self.grpc_port = grpc_port
        self.gateway_url = f"http://127.0.0.1:{port}"
        # The storage driver of the dockerd the fixture started ("" when an engine was running).
        self.started_driver = ""
        self.env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "DOCKER_HOST")},
            "DOCKER_CONFIG": str(workdir / "docker-config"),
            "GATEWAY_ADMIN_TOKEN": TOKEN,
            "GRAFANA_ADMIN_PASSWORD": "unused-in-the-compose-tests",
            "POSTGRES_PASSWORD": "compose-db-password",
            "MODEL_STORE_SEED": str(seed),
            "COMPOSE_TEST_GATEWAY_PORT": str(port),
            "COMPOSE_TEST_GATEWAY_GRPC_PORT": str(grpc_port),
            "COMPOSE_TEST_GATEWAY_IMAGE": built.GATEWAY,
            "COMPOSE_TEST_TORCHSERVE_IMAGE": built.TORCHSERVE_AGENT,
            "COMPOSE_TEST_TFSERVING_IMAGE": built.TFSERVING_AGENT,
            "COMPOSE_TEST_POSTGRES_IMAGE": built.POSTGRES,
        }
        (workdir / "docker-config").mkdir(parents=True, exist_ok=True)

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(Path(sys.executable).with_name("docker-compose")), "--project-name", PROJECT,
                "--project-directory", str(ROOT), "--env-file", os.devnull]  # fmt: skip
        for f in COMPOSE_FILES:
            argv += ["-f", str(f)]
        done = subprocess.run([*argv, *args], capture_output=True, text=True, env=self.env, timeout=timeout, cwd=ROOT)
        if check and done.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
        return done

    def docker_json(self, *args: str) -> object:
        done = subprocess.run([self.docker, *args], capture_output=True, text=True, timeout=120, check=True)
        return json.loads(done.stdout)

    def containers(self, service: str) -> list[str]:
        return sorted(self.compose("ps", "--all", "-q", service).stdout.split())

    def container(self, service: str) -> str:
        ids = self.containers(service)
        assert len(ids) == 1, f"{service}: expected one container, found {ids}"
        return ids[0]

    def inspect(self, service: str, container: str | None = None) -> dict:
        found = self.docker_json("inspect", container or self.container(service))
        assert isinstance(found, list)
        return found[0]

    def health(self, service: str, container: str | None = None) -> str:
        state = self.inspect(service, container)["State"]
        return str(state.get("Health", {}).get("Status") or state["Status"])

    def wait_healthy(self, services: tuple[str, ...], deadline_s: float = HEALTHY_DEADLINE_S) -> None:
        """Every container of each service healthy (all replicas of a scaled one)."""
        deadline = time.monotonic() + deadline_s
        for service in services:
            for container in self.containers(service):
                while (status := self.health(service, container)) != "healthy":
                    if status in ("unhealthy", "exited", "dead") or time.monotonic() > deadline:
                        raise AssertionError(f"{service} is {status}, not healthy; its log:\n{self.logs(service)}")
                    time.sleep(1)

    def logs(self, *services: str, tail: int = 80) -> str:
        return self.compose("logs", "--no-color", f"--tail={tail}", *services, check=False).stdout[-8000:]

    def http_inside(self, service: str, port: int, path: str, index: int = 1) -> tuple[int, str]:
        """``GET path`` on replica ``index``'s own loopback, with bash's /dev/tcp (both the official
        images and the look-alikes have bash): the management ports are reachable nowhere else.
        The body is read by its Content-Length: TorchServe keeps the connection open."""
        done = self.compose("exec", "-T", "--index", str(index), service, "timeout", "30", "bash", "-c", HTTP_GET,
                            "http-get", str(port), path, timeout=90, check=False)  # fmt: skip
        head, _, body = done.stdout.partition("\n\n")
        if done.returncode != 0 or not head.startswith("HTTP/"):
            return 0, f"exit {done.returncode}: {done.stdout[-500:]} {done.stderr[-2000:]}"
        return int(head.split()[1]), body

    def up(self) -> None:
        self.down()
        scale = [arg for backend in BACKENDS for arg in ("--scale", f"{backend}={REPLICAS}")]
        self.compose("up", "--detach", "--no-build", "--pull", "never", *scale, timeout=UP_DEADLINE_S)
        self.wait_healthy(("postgres", "torchserve", "tfserving", "gateway"))
        self.wait_replicas_ready(HEALTHY_DEADLINE_S)

    # --- the registry the gateway and the agents share ------------------------------------------
    def registry(self, sql: str) -> list[list[str]]:
        """Rows of ``sql`` in the compose PostgreSQL (inside its container: its port is published nowhere)."""
        done = self.compose("exec", "-T", "postgres", "psql", "-U", "gateway", "-d", "gateway", "-At", "-F", "\t",
                            "-c", sql, timeout=60, check=False)  # fmt: skip
        if done.returncode != 0:  # e.g. the schema not there yet
            return []
        return [line.split("\t") for line in done.stdout.splitlines() if line]

    def hosts(self, service: str) -> list[str]:
        """The host names of ``service``'s containers: its replicas' ids."""
        return [self.inspect(service, c)["Config"]["Hostname"] for c in self.containers(service)]

    def unready(self) -> list[str]:
        """(replica, version) pairs the registry wants ready and its replica has not reported ready:
        every available version of a stack on every container of that stack."""
        ready = {tuple(r) for r in self.registry(
            "SELECT replica_id, model, version FROM registry_replica_versions WHERE state = 'ready'")}  # fmt: skip
        missing = []
        for backend in BACKENDS:
            available = self.registry(f"SELECT model, version FROM registry_versions WHERE backend = '{backend}' "
                                      "AND state = 'available'")  # fmt: skip
            if not available:
                missing.append(f"{backend}: no available version in the registry yet")
            for host in self.hosts(backend):
                missing += [f"{host} {m} v{v}" for m, v in available if (host, m, v) not in ready]
        return missing

    def wait_replicas_ready(self, deadline_s: float) -> None:
        """Until every replica reports every available version of its stack ready (the agents
        converge after the containers are healthy: healthy means the server answers)."""
        deadline = time.monotonic() + deadline_s
        while missing := self.unready():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not ready within {deadline_s:g}s: {missing}\n{self.logs('torchserve', 'tfserving')}"
                )
            time.sleep(1)

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300, check=False)


@pytest.fixture(scope="package")
def compose_stack() -> Iterator[ComposeStack]:
    ensure_models()
    workdir = Path(tempfile.mkdtemp(prefix="twin-stack-compose-"))
    engine = Engine(workdir)
    stack: ComposeStack | None = None
    try:
        engine.start()
        engine.check_space()
        images = built.Images(engine.cli, prune_build_cache=engine.started_here)
        images.all()
        # The seed is read by model-init as the gateway image's user (uid 1000): world-readable.
        seed = workdir / "seed"
        for version_dir in sorted(STORE.glob("*/[0-9]*")):
            name = f"{version_dir.parent.name}/{version_dir.name}"
            if name not in DEPLOYED_LATER:
                shutil.copytree(version_dir, seed / name)
        for path in [workdir, *seed.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        stack = ComposeStack(engine.cli, workdir, seed, free_port(), free_port())
        stack.started_driver = engine.driver
        stack.up()
        yield stack
    finally:
        if stack is not None:
            # Every service's log, kept for a look after the run (the containers are removed).
            LOGS.parent.mkdir(parents=True, exist_ok=True)
            LOGS.write_text(stack.compose("logs", "--no-color", "--timestamps", check=False, timeout=120).stdout)
            stack.down()
        engine.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="package")
def gateway(compose_stack: ComposeStack) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=compose_stack.gateway_url, timeout=120, headers=headers) as client:
        yield client
