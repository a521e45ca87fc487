"""deploy/localstack.py: another gateway process started from another checkout's code (what
scripts/bench_revisions.py does to compare two revisions), with this stack's settings."""

from __future__ import annotations

from pathlib import Path

from localstack import ROOT, LocalStack, Ports, Service


def test_a_gateway_process_runs_the_code_of_the_tree_it_is_given(tmp_path, monkeypatch):
    started: list[Service] = []
    monkeypatch.setattr(Service, "start", lambda self: started.append(self))
    monkeypatch.setattr(LocalStack, "_wait_gateway_ready", lambda self, service, port=None: None)
    stack = LocalStack(tmp_path / "store", tmp_path / "work", Ports(), start_gateway=False)
    tree = tmp_path / "rev-0"
    other = stack.start_gateway_process(8123, "bench-head", {"GATEWAY_GRPC_PORT": "0"}, tree=tree)
    own = stack.start_gateway_process(8124, "replica")
    assert started == [other, own]
    assert other.cwd == tree and other.env["PYTHONPATH"] == str(tree)  # its gateway package first
    assert other.argv[1:] == ["-m", "gateway.cli", "serve"]
    assert other.env["GATEWAY_PORT"] == "8123" and other.env["GATEWAY_GRPC_PORT"] == "0"
    assert other.env["GATEWAY_DATABASE_URL"] == own.env["GATEWAY_DATABASE_URL"]  # the same registry
    assert own.cwd == ROOT and "PYTHONPATH" not in own.env
    assert Path(other.log_path).parent.name == "bench-head"
