"""Process-level behaviour: flags, startup refusal, graceful SIGTERM."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format

from .helpers import AVAILABLE, SERVER_SCRIPT, model_config, start_server, wait_for, wait_until_serving

pytestmark = pytest.mark.e2e


def test_unknown_flag_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SERVER_SCRIPT), "--model_base_path=/x", "--no_such_flag=1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --no_such_flag=1" in result.stderr


def test_single_model_flags_and_sigterm(model_paths: dict[str, Path], tmp_path: Path) -> None:
    server = start_server(
        ["--model_name", "solo", f"--model_base_path={model_paths['linear']}"],
        tmp_path / "server.log",
        rest=False,
    )
    try:
        # Default policy latest{1}: version 2 only; the .mar directory 3 is skipped.
        wait_until_serving(server, {"solo": {2: AVAILABLE}})
        assert server.states("solo") == {2: AVAILABLE}
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.stop()
    # The graceful stop ran to its end: the 1.5 s fallback exit (also status 0) would skip this line.
    log = server.log()
    assert "Received SIGTERM" in log
    assert log.rstrip().endswith("Server stopped"), log[-2000:]


def test_startup_labels_need_the_flag(model_paths: dict[str, Path], tmp_path: Path) -> None:
    # As tensorflow_model_server: nothing is AVAILABLE when the first config is applied, so
    # labels fail unless --allow_version_labels_for_unavailable_models is given.
    config_file = tmp_path / "models.config"
    config_file.write_text(text_format.MessageToString(model_config(model_paths)))
    server = start_server([f"--model_config_file={config_file}"], tmp_path / "server.log")
    try:
        # main.cc returns -1 when BuildAndStart fails.
        assert server.proc.wait(timeout=60) == 255
    finally:
        server.stop()
    log = server.log()
    assert "Failed to start server. Error: FAILED_PRECONDITION: Request to assign label" in log


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ports_open_only_after_the_configured_models_loaded(model_paths: dict[str, Path], tmp_path: Path) -> None:
    # server.cc BuildAndStart: ServerCore::Create (which waits for every configured model)
    # runs before the gRPC and HTTP servers are built.
    base = tmp_path / "m"
    base.mkdir()
    server = start_server(["--model_name=m", f"--model_base_path={base}"], tmp_path / "server.log")
    try:
        wait_for(lambda: "No versions of servable m found under base path" in server.log(), 60, "the first poll")
        assert server.proc.poll() is None
        assert not port_open(server.grpc_port)
        assert not port_open(server.rest_port)

        shutil.copytree(model_paths["linear"] / "1", base / "1")
        wait_for(lambda: port_open(server.grpc_port) and port_open(server.rest_port), 60, "ports open")
        assert server.states("m") == {1: AVAILABLE}  # already loaded at the first answer
    finally:
        server.stop()


def test_a_model_that_fails_to_load_at_startup_makes_the_server_exit(tmp_path: Path) -> None:
    # load_servables_fast.cc: "N servable(s) did not become available"; main.cc: return -1.
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "saved_model.pb").write_bytes(b"\xffnot a proto")
    server = start_server(
        [
            "--model_name=broken",
            f"--model_base_path={tmp_path / 'broken'}",
            "--max_num_load_retries=1",
            "--load_retry_interval_micros=100000",
        ],
        tmp_path / "server.log",
    )
    try:
        assert server.proc.wait(timeout=120) == 255
    finally:
        server.stop()
    log = server.log()
    assert (
        "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
        "{{{name: broken version: 1} due to error: "
    ) in log
    assert log.count("Loading servable: {name: broken version: 1} failed") == 2  # one retry


def test_deployment_flags_are_accepted_and_the_config_file_is_polled(
    model_paths: dict[str, Path], tmp_path: Path
) -> None:
    # The flags docker-compose.yml and k8s/ pass; server.cc PollFilesystemAndReloadConfig
    # re-reads --model_config_file every --model_config_file_poll_wait_seconds.
    config_file = tmp_path / "models.config"
    only_linear = {name: None for name in ("pair", "text", "polled", "reloadable")}
    config_file.write_text(text_format.MessageToString(model_config(model_paths, {**only_linear, "linear": {}})))
    server = start_server(
        [
            f"--model_config_file={config_file}",
            "--model_config_file_poll_wait_seconds=1",
            "--per_process_gpu_memory_fraction=0.4",
            "--enable_batching",
            "--rest_api_timeout_in_ms=5000",
            "--max_num_load_retries=3",
            "--load_retry_interval_micros=1000",
            "--allow_version_labels_for_unavailable_models",
        ],
        tmp_path / "server.log",
    )
    try:
        wait_until_serving(server, {"linear": {2: AVAILABLE}})
        with_pair = {**only_linear, "linear": {}, "pair": {}}
        config_file.write_text(text_format.MessageToString(model_config(model_paths, with_pair)))
        wait_until_serving(server, {"pair": {1: AVAILABLE}})  # no reload call was made
    finally:
        server.stop()
