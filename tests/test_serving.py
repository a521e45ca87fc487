"""``gateway serve`` (gateway/serving.py): the uvicorn it configures, and grpc's I/O path chosen
before grpc starts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
import uvicorn

import gateway.serving as serving
from gateway.settings import Settings
from gateway.wire import JoinedWritesProtocol


class Stop(Exception):
    pass


def test_the_gateway_serves_with_the_joined_writes_protocol(monkeypatch):
    """``gateway serve`` hands uvicorn this protocol (the Config it builds, not run)."""
    seen: dict[str, Any] = {}

    class Server:
        def __init__(self, config: uvicorn.Config) -> None:
            seen["http"] = config.http
            raise Stop

    monkeypatch.setattr(uvicorn, "Server", Server)
    monkeypatch.setattr("gateway.app.create_app", lambda settings: object())
    monkeypatch.setenv("GRPC_EXPERIMENTS", "")  # this process's grpc is long started
    with pytest.raises(Stop):
        serving.serve(Settings(_env_file=None))  # type: ignore[call-arg]
    assert seen["http"] is JoinedWritesProtocol


@pytest.mark.parametrize(
    ("given", "grpcio", "expected"),
    [
        (None, "1.85.3", serving.GRPC_EXPERIMENTS),  # measured: set
        (None, "1.86.0", None),  # not measured: grpc's defaults
        ("", "1.85.3", ""),  # the operator's empty value: grpc's defaults
        ("-event_engine_client", "1.85.3", "-event_engine_client"),  # the operator's own
    ],
)
def test_grpc_experiments_are_set_only_when_unset_and_measured(monkeypatch, given, grpcio, expected):
    monkeypatch.setattr(serving.metadata, "version", lambda name: grpcio)
    environ = {} if given is None else {"GRPC_EXPERIMENTS": given}
    assert serving.grpc_defaults(environ) == expected
    assert environ.get("GRPC_EXPERIMENTS") == expected


def test_serve_sets_them_before_grpc_is_imported():
    """grpc reads the variable once, when it starts: ``serve`` sets it before the app (and grpc)."""
    script = textwrap.dedent(
        """
        import os, sys
        import uvicorn
        import gateway.serving as serving
        from gateway.settings import Settings

        os.environ.pop("GRPC_EXPERIMENTS", None)
        serving.metadata.version = lambda name: "1.85.3"
        before = serving.grpc_defaults
        def spy(*args):
            print("grpc imported first:", "grpc" in sys.modules)
            return before(*args)
        serving.grpc_defaults = spy
        class Server:
            def __init__(self, config):
                print("grpc started with:", os.environ.get("GRPC_EXPERIMENTS"), "grpc" in sys.modules)
                raise SystemExit(0)
        uvicorn.Server = Server
        serving.serve(Settings(_env_file=None))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert "grpc imported first: False" in out.stdout, out.stdout + out.stderr
    assert f"grpc started with: {serving.GRPC_EXPERIMENTS} True" in out.stdout, out.stdout + out.stderr
