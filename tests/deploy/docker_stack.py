"""``make test-docker``: the end-to-end tests against TorchServe and TF Serving run from their
official images (through the Docker SDK) instead of the local processes.

``GATEWAY_E2E_BACKENDS=docker`` makes :func:`make_stack` return a :class:`DockerStack`; anything
else (the default, ``local``) returns deploy/localstack.py's ``LocalStack``. The two have the same
attributes and the same start and readiness rules; only how the backends start and stop differs:

- TorchServe runs ``pytorch/torchserve`` with the container config the deployments use
  (deploy/docker/torchserve/config.properties) and the test's model store mounted at ``/models``;
- TF Serving runs ``tensorflow/serving`` with a model config written by deploy/docker/stack_init.py
  and the monitoring config of deploy/tfserving/;
- both publish their ports on 127.0.0.1 at the stack's (free) ports; the gateway stays a local
  process, as in the local stack, with ``GATEWAY_TFSERVING_MODEL_BASE_PATH=/models``.

The image tags are read from docker-compose.cpu.yml (CPU, the default) or, with
``GATEWAY_E2E_GPU=1``, from docker-compose.yml, so that the tests run what the deployment runs.
Without a reachable Docker engine, starting the stack skips the tests, saying where it looked.
"""

from __future__ import annotations

import importlib.util
import os
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from localstack import LocalStack, Ports, StartError

ROOT = Path(__file__).resolve().parents[2]
BACKENDS_ENV = "GATEWAY_E2E_BACKENDS"
GPU_ENV = "GATEWAY_E2E_GPU"
TS_CONFIG = ROOT / "deploy" / "docker" / "torchserve" / "config.properties"
TF_MONITORING = ROOT / "deploy" / "tfserving" / "monitoring.config"
CONTAINER_STORE = "/models"
# Container-side ports: the ones deploy/docker/torchserve/config.properties and the TF Serving
# command line of the deployments use.
TS_PORTS = {"inference": 8080, "management": 8081, "metrics": 8082}
TF_PORTS = {"grpc": 8500, "rest": 8501}


def load_stack_init() -> Any:
    """deploy/docker/stack_init.py as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("stack_init", ROOT / "deploy" / "docker" / "stack_init.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def backend_images(gpu: bool) -> dict[str, str]:
    """``{"torchserve": image, "tfserving": image}`` as the compose files pin them."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    images = {name: services[name]["image"] for name in ("torchserve", "tfserving")}
    if not gpu:
        override = yaml.load((ROOT / "docker-compose.cpu.yml").read_text(), Loader=_ComposeLoader)["services"]
        images.update({name: override[name]["image"] for name in images if "image" in override.get(name, {})})
    return images


class _ComposeLoader(yaml.SafeLoader):
    """Reads the Compose Specification's ``!reset`` and ``!override`` tags as plain values."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)
_ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: (
        loader.construct_sequence(node)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node)
        if isinstance(node, yaml.MappingNode)
        else loader.construct_scalar(node)
    ),
)


def docker_client() -> Any:
    """A Docker SDK client that answered a ping, else ``pytest.skip`` naming where it looked."""
    import docker

    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # the SDK raises DockerException, requests' and socket errors alike
        pytest.skip(
            f"{BACKENDS_ENV}=docker needs a Docker engine, and none answered at {where} "
            f"(set DOCKER_HOST, or start dockerd so that the socket exists): {exc}"
        )
    return client


class ContainerService:
    """One backend container, with the methods of localstack's ``Service`` that the stack uses."""

    def __init__(self, name: str, container: Any) -> None:
        self.name = name
        self.container = container

    def alive(self) -> bool:
        try:
            self.container.reload()
        except Exception:
            return False
        return bool(self.container.status in ("created", "running"))

    def log_tail(self, lines: int = 60) -> str:
        try:
            return bytes(self.container.logs(tail=lines)).decode(errors="replace")
        except Exception as exc:
            return f"(no log: {exc})"

    def wait_until(self, check: Callable[[], bool], deadline_s: float, what: str) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise StartError(f"{self.name} exited while {what}; its log:\n{self.log_tail()}")
            try:
                if check():
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.5)
        raise StartError(f"{self.name}: not {what} within {deadline_s:.0f}s; its log:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        try:
            self.container.stop(timeout=int(timeout))
        except Exception:
            pass
        try:
            self.container.remove(force=True)
        except Exception:
            pass


class DockerStack(LocalStack):
    """``LocalStack`` with TorchServe and TF Serving in containers of their official images."""

    def __init__(
        self,
        store: Path,
        workdir: Path,
        ports: Ports | None = None,
        *,
        gpu: bool | None = None,
        client: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(store, workdir, ports, **kwargs)
        self.gpu = os.environ.get(GPU_ENV) == "1" if gpu is None else gpu
        self.images = backend_images(self.gpu)
        self.client = client
        self.label = f"twin-stack-e2e-{os.getpid()}-{id(self):x}"

    # --- what the containers get --------------------------------------------------------------
    def tfserving_model_config(self) -> str:
        """The same config as the local stack's, with the store's path inside the container."""
        versions = [(v.model, v.version, v.backend) for v in self.versions]
        config: str = load_stack_init().tfserving_config(versions, CONTAINER_STORE)
        return config

    def write_startup_files(self) -> None:
        """As the local stack's, with the store's path inside the container in TF Serving's config
        (the gateway, told ``GATEWAY_TFSERVING_MODEL_BASE_PATH``, rewrites it the same way)."""
        if not self.tfserving_config_file.exists():
            load_stack_init().write_atomically(self.tfserving_config_file, self.tfserving_model_config())
        super().write_startup_files()

    def gateway_environment(self) -> dict[str, str]:
        env = super().gateway_environment()
        env.setdefault("GATEWAY_TFSERVING_MODEL_BASE_PATH", CONTAINER_STORE)
        return env

    def container_specs(self) -> dict[str, dict[str, Any]]:
        """Keyword arguments of ``client.containers.run`` for each backend (no engine needed)."""
        p = self.ports
        common: dict[str, Any] = {
            "detach": True,
            "labels": {"twin-stack-e2e": self.label},
            # The test's store belongs to the user running the tests; TorchServe writes into it.
            "user": f"{os.getuid()}:{os.getgid()}",
        }
        if self.gpu:
            import docker

            common["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
        ts_tmp = "/tmp/torchserve"
        return {
            "torchserve": {
                **common,
                "image": self.images["torchserve"],
                "name": f"{self.label}-torchserve",
                "entrypoint": ["torchserve"],
                "command": [
                    "--start",
                    "--foreground",
                    "--ts-config=/etc/torchserve/config.properties",
                    f"--model-store={CONTAINER_STORE}",
                    "--disable-token-auth",
                    "--enable-model-api",
                    "--ncs",
                ],
                "environment": {
                    "HOME": ts_tmp,
                    "TEMP": ts_tmp,
                    "TMPDIR": ts_tmp,
                    "LOG_LOCATION": f"{ts_tmp}/logs",
                    "METRICS_LOCATION": f"{ts_tmp}/logs",
                },
                "volumes": {
                    str(self.store): {"bind": CONTAINER_STORE, "mode": "rw"},
                    str(TS_CONFIG): {"bind": "/etc/torchserve/config.properties", "mode": "ro"},
                },
                "ports": {
                    f"{TS_PORTS['inference']}/tcp": ("127.0.0.1", p.ts_inference),
                    f"{TS_PORTS['management']}/tcp": ("127.0.0.1", p.ts_management),
                    f"{TS_PORTS['metrics']}/tcp": ("127.0.0.1", p.ts_metrics),
                },
            },
            "tfserving": {
                **common,
                "image": self.images["tfserving"],
                "name": f"{self.label}-tfserving",
                "entrypoint": ["tensorflow_model_server"],
                "command": [
                    f"--port={TF_PORTS['grpc']}",
                    f"--rest_api_port={TF_PORTS['rest']}",
                    f"--model_config_file={CONTAINER_STORE}/.tfserving/models.config",
                    "--monitoring_config_file=/etc/tfserving/monitoring.config",
                    "--file_system_poll_wait_seconds=1",
                ],
                "volumes": {
                    str(self.store): {"bind": CONTAINER_STORE, "mode": "ro"},
                    str(TF_MONITORING): {"bind": "/etc/tfserving/monitoring.config", "mode": "ro"},
                },
                "ports": {
                    f"{TF_PORTS['grpc']}/tcp": ("127.0.0.1", p.tf_grpc),
                    f"{TF_PORTS['rest']}/tcp": ("127.0.0.1", p.tf_rest),
                },
            },
        }

    # --- start and stop ---------------------------------------------------------------------
    def _run(self, name: str, spec: dict[str, Any]) -> ContainerService:
        from docker.errors import ImageNotFound

        try:
            self.client.images.get(spec["image"])
        except ImageNotFound:
            self.client.images.pull(spec["image"])
        service = ContainerService(name, self.client.containers.run(**spec))
        self.services[name] = service
        return service

    def start(self, timeout: float = 600.0) -> None:
        """Start both containers and wait as ``LocalStack.start`` does; on failure remove them."""
        if self.client is None:
            self.client = docker_client()
        self.write_startup_files()
        try:
            specs = self.container_specs()
            self.services = {}
            ts = self._run("torchserve", specs["torchserve"])
            tf = self._run("tfserving", specs["tfserving"])
            ts.wait_until(lambda: _ok(f"{self.torchserve_url}/ping"), timeout, "answering /ping")
            self._register_torchserve_versions(ts)  # type: ignore[arg-type]
            tf.wait_until(self._tf_available, timeout, "serving every SavedModel version")
            if self.start_gateway:
                self.start_gateway_process()
        except BaseException:
            self.stop()
            raise


def _ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        return bool(resp.status == 200)


def make_stack(store: Path, workdir: Path, ports: Ports | None = None, **kwargs: Any) -> LocalStack:
    """The e2e stack the environment asks for: ``GATEWAY_E2E_BACKENDS`` = ``local`` or ``docker``."""
    mode = os.environ.get(BACKENDS_ENV, "local")
    if mode == "docker":
        return DockerStack(store, workdir, ports, **kwargs)
    if mode != "local":
        raise ValueError(f"{BACKENDS_ENV}={mode!r}: expected 'local' or 'docker'")
    return LocalStack(store, workdir, ports, **kwargs)
