"""Fixtures: tiny SavedModels and one shared tfserving_dev server for the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import text_format

from .helpers import (
    AVAILABLE,
    ServerProcess,
    build_model_store,
    model_config,
    start_server,
    wait_for,
    wait_until_serving,
)

BASE_STATES = {
    "linear": {1: AVAILABLE, 2: AVAILABLE},
    "pair": {1: AVAILABLE},
    "text": {1: AVAILABLE},
    "polled": {1: AVAILABLE},
    "reloadable": {1: AVAILABLE},
}


@pytest.fixture(scope="session")
def model_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Base paths of the test models."""
    return build_model_store(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def server(model_paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the session, with labels, metrics and fast polling."""
    workdir = tmp_path_factory.mktemp("server")
    config_file = workdir / "models.config"
    config_file.write_text(text_format.MessageToString(model_config(model_paths)))
    monitoring_file = workdir / "monitoring.config"
    monitoring_file.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    proc = start_server(
        [
            f"--model_config_file={config_file}",
            "--monitoring_config_file",
            str(monitoring_file),
            "--file_system_poll_wait_seconds=0.2",
            # Labels in the startup config need it, as with the real server.
            "--allow_version_labels_for_unavailable_models",
        ],
        workdir / "server.log",
    )
    try:
        wait_until_serving(proc, BASE_STATES)
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def restore_config(server: ServerProcess, model_paths: dict[str, Path]) -> Iterator[None]:
    """Put the startup config back after a test that reloads another one."""
    yield
    server.reload(model_config(model_paths))
    wait_until_serving(server, {k: v for k, v in BASE_STATES.items() if k != "polled"})
    # Versions the config no longer names unload on the manager's ticks, after the reload.
    wait_for(
        lambda: all(s != AVAILABLE for v, s in server.states("reloadable").items() if v != 1),
        30,
        "reloadable back to version 1 only",
    )
