"""Process-level behaviour: flags, startup refusal, graceful SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.protobuf import text_format

from .helpers import AVAILABLE, SERVER_SCRIPT, model_config, start_server, wait_until_serving

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
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 2.0, server.log()
    finally:
        server.stop()
    assert "Received SIGTERM" in server.log()


def test_startup_labels_need_the_flag(model_paths: dict[str, Path], tmp_path: Path) -> None:
    # As tensorflow_model_server: nothing is AVAILABLE when the first config is applied, so
    # labels fail unless --allow_version_labels_for_unavailable_models is given.
    config_file = tmp_path / "models.config"
    config_file.write_text(text_format.MessageToString(model_config(model_paths)))
    server = start_server([f"--model_config_file={config_file}"], tmp_path / "server.log")
    try:
        assert server.proc.wait(timeout=60) == 1
    finally:
        server.stop()
    log = server.log()
    assert "Failed to start server. Error: FAILED_PRECONDITION: Request to assign label" in log
