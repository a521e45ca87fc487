"""Helpers for the tfserving_dev tests: tiny SavedModels and a server subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = REPO_ROOT / "deploy" / "tfserving_dev" / "server.py"
AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.Value("AVAILABLE")
END = get_model_status_pb2.ModelVersionStatus.State.Value("END")

# Fixed weights, so expected outputs can be written down: y = x @ W + b.
LINEAR_WEIGHTS = {1: ([[1.0], [2.0]], [0.5]), 2: ([[10.0], [20.0]], [1.0])}


class _Linear(tf.Module):
    def __init__(self, weights: list[list[float]], bias: list[float]) -> None:
        super().__init__()
        self.w = tf.Variable(weights, dtype=tf.float32)
        self.b = tf.Variable(bias, dtype=tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.matmul(x, self.w) + self.b}


class _Pair(tf.Module):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="a"),
            tf.TensorSpec([None], tf.float32, name="b"),
        ]
    )
    def serve(self, a: tf.Tensor, b: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"sum": a + b, "product": a * b}


class _Text(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"length": tf.strings.length(text), "upper_bytes": tf.strings.upper(text)}


def _save(module: tf.Module, path: Path) -> None:
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def build_model_store(root: Path) -> dict[str, Path]:
    """Write the test models; returns {model name: base path}."""
    paths = {name: root / name for name in ("linear", "pair", "text", "polled", "reloadable", "broken")}
    for version, (w, b) in LINEAR_WEIGHTS.items():
        _save(_Linear(w, b), paths["linear"] / str(version))
    # An integer directory holding a TorchServe archive, as the project's model store has.
    (paths["linear"] / "3").mkdir()
    (paths["linear"] / "3" / "model.mar").write_bytes(b"not a SavedModel")
    _save(_Pair(), paths["pair"] / "1")
    _save(_Text(), paths["text"] / "1")
    shutil.copytree(paths["linear"] / "1", paths["polled"] / "1")
    (paths["polled"] / "9").mkdir()
    (paths["polled"] / "9" / "model.mar").write_bytes(b"not a SavedModel")
    shutil.copytree(paths["linear"] / "1", paths["reloadable"] / "1")
    shutil.copytree(paths["linear"] / "2", paths["reloadable"] / "2")
    (paths["broken"] / "1").mkdir(parents=True)
    (paths["broken"] / "1" / "saved_model.pb").write_bytes(b"\xffdefinitely not a proto")
    return paths


def model_config(
    paths: dict[str, Path], overrides: dict[str, dict[str, Any]] | None = None
) -> model_server_config_pb2.ModelServerConfig:
    """The test server's config; overrides[name] replaces policy/labels, None drops a model."""
    base: dict[str, dict[str, Any]] = {
        "linear": {"specific": [1, 2], "labels": {"stable": 1, "canary": 2}},
        "pair": {},
        "text": {},
        "polled": {},
        "reloadable": {"specific": [1]},
    }
    for name, value in (overrides or {}).items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    config = model_server_config_pb2.ModelServerConfig()
    for name, options in base.items():
        model = config.model_config_list.config.add(
            name=name,
            base_path=str(options.get("base_path", paths.get(name, ""))),
            model_platform="tensorflow",
        )
        if "specific" in options:
            model.model_version_policy.specific.versions.extend(options["specific"])
        for label, version in options.get("labels", {}).items():
            model.version_labels[label] = version
    return config


def free_port() -> int:
    """Ask the OS for a free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll check() until it is true; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class ServerProcess:
    """A tfserving_dev server subprocess and clients for it."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    grpc_port: int
    rest_port: int
    channel: grpc.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def log(self) -> str:
        """The server's output so far."""
        return self.log_path.read_text(errors="replace")

    def states(self, name: str) -> dict[int, int]:
        """{version: state} from GetModelStatus, {} if the model is unknown."""
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        try:
            response = self.models.GetModelStatus(request, timeout=5)
        except grpc.RpcError:
            return {}
        return {s.version: s.state for s in response.model_version_status}

    def reload(self, config: model_server_config_pb2.ModelServerConfig) -> Any:
        """HandleReloadConfigRequest with a 60 s deadline."""
        request = model_management_pb2.ReloadConfigRequest(config=config)
        return self.models.HandleReloadConfigRequest(request, timeout=60)

    def http(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A REST call; returns (status, decoded JSON or text)."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body))
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.rest_port}{path}",
            data=data.encode() if isinstance(data, str) else data,
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit."""
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(args: list[str], log_path: Path, rest: bool = True) -> ServerProcess:
    """Start server.py on free ports (from a different cwd, as the launcher may)."""
    grpc_port = free_port()
    rest_port = free_port() if rest else 0
    command = [
        sys.executable,
        str(SERVER_SCRIPT),
        f"--port={grpc_port}",
        "--rest_api_port",
        str(rest_port),
        *args,
    ]
    log_file = log_path.open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, cwd=log_path.parent, env=env)
    log_file.close()
    return ServerProcess(proc, log_path, grpc_port, rest_port)


def wait_until_serving(server: ServerProcess, expected: dict[str, dict[int, int]], timeout: float = 60) -> None:
    """Wait for GetModelStatus to report the expected states; show the log on failure."""

    def ready() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited early:\n{server.log()}")
        return all(
            all(server.states(name).get(v) == s for v, s in versions.items()) for name, versions in expected.items()
        )

    try:
        wait_for(ready, timeout, f"models {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- server log ---\n{server.log()}") from None
