"""``gateway agent ... -- <backend command>``: the agent as a container's entry wrapper, with real
processes (the agent is ``python -m gateway.cli agent``, its child a small Python program), a real
SQLite registry and a real local artifact store; and the agent's settings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from localstack import free_port

from gateway.agent.child import exit_code, expand
from gateway.agent.run import agent_config
from gateway.registry import RegistryStore
from gateway.settings import Settings
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]

# The backend stand-in: records its pid and its grandchild's, and on SIGTERM writes which signal
# it got and exits 3. The grandchild (`sleep`) stays in the group, as TorchServe's Java does.
BACKEND = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    out = sys.argv[1]
    grandchild = subprocess.Popen(["sleep", "600"])
    open(out + ".pids", "w").write(f"{os.getpid()} {grandchild.pid}")
    def term(sig, frame):
        # How many replicas the registry holds when the signal arrives (the agent drains first).
        import sqlite3
        try:
            rows = sqlite3.connect(sys.argv[-1]).execute("SELECT count(*) FROM registry_replicas").fetchone()[0]
        except sqlite3.Error as exc:
            rows = f"error {exc}"
        open(out + ".replicas", "w").write(str(rows))
        open(out + ".signal", "w").write(signal.Signals(sig).name)
        sys.exit(3)
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)
    mode = sys.argv[2]
    if mode == "exit":
        sys.exit(int(sys.argv[3]))
    while True:
        time.sleep(0.1)
    """
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Wrapped:
    """One ``gateway agent --stack torchserve ... -- python backend.py OUT MODE [ARG]``."""

    def __init__(self, tmp_path: Path, *backend_args: str, extra: tuple[str, ...] = (), env: dict | None = None):
        self.tmp_path = tmp_path
        self.out = tmp_path / "backend"
        script = tmp_path / "backend.py"
        script.write_text(BACKEND)
        self.registry_url = f"sqlite:///{tmp_path / 'registry.db'}"
        environment = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "GATEWAY_DATABASE_URL": self.registry_url,
            "GATEWAY_ARTIFACT_STORE": "local",
            "GATEWAY_ARTIFACT_STORE_DIR": str(tmp_path / "artifacts"),
            **(env or {}),
        }
        nobody = free_port()  # no backend management API answers: the agent just keeps trying
        argv = [sys.executable, "-m", "gateway.cli", "agent", "--stack", "torchserve",
                "--management-url", f"http://127.0.0.1:{nobody}", "--inference-url", "http://{ip}:8080",
                "--model-dir", str(tmp_path / "local"), "--poll-seconds", "0.2", *extra,
                "--", sys.executable, str(script), str(self.out), *backend_args,
                str(tmp_path / "registry.db")]  # fmt: skip
        self.log = (tmp_path / "agent.log").open("wb")
        self.process = subprocess.Popen(argv, env=environment, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)

    def pids(self) -> tuple[int, int]:
        wait_until(lambda: Path(f"{self.out}.pids").is_file(), "the backend started", 30)
        child, grandchild = Path(f"{self.out}.pids").read_text().split()
        return int(child), int(grandchild)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        return (self.tmp_path / "agent.log").read_text(errors="replace")

    def close(self) -> None:
        """Stop the agent as a container would (SIGTERM, then SIGKILL), and whatever of the backend
        a failed test left behind (a SIGKILLed agent cannot stop its child)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        pids = Path(f"{self.out}.pids")
        for pid in pids.read_text().split() if pids.is_file() else ():
            if alive(int(pid)):
                os.kill(int(pid), signal.SIGKILL)
        self.log.close()


@pytest.fixture
def wrapped(tmp_path):
    started: list[Wrapped] = []

    def start(*args: str, **kwargs) -> Wrapped:
        w = Wrapped(tmp_path, *args, **kwargs)
        started.append(w)
        return w

    yield start
    for w in started:
        w.close()


def registered(agent: Wrapped) -> bool:
    registry = RegistryStore(agent.registry_url)
    try:
        return bool(_replicas(registry))
    finally:
        registry.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_reaches_the_backend_and_its_exit_code_is_the_agents(wrapped, sig):
    agent = wrapped("run")
    child, grandchild = agent.pids()
    wait_until(lambda: registered(agent), "the replica registered", 30)
    agent.process.send_signal(sig)
    assert agent.wait() == 3, agent.output()
    assert Path(f"{agent.out}.signal").read_text() == sig.name
    # A drain: the replica left the registry before the backend got the signal.
    assert Path(f"{agent.out}.replicas").read_text() == "0", agent.output()
    # The whole group got it: nothing of the backend is left.
    wait_until(lambda: not alive(child) and not alive(grandchild), "the backend's processes are gone", 15)


def test_the_agent_stops_when_the_backend_exits_and_passes_its_code_on(wrapped):
    agent = wrapped("exit", "7")
    _, grandchild = agent.pids()
    assert agent.wait() == 7, agent.output()
    # The backend's own child outlived it: the agent ended it too.
    assert not alive(grandchild)
    assert "the backend exited with 7" in agent.output()


def test_the_replica_registers_with_its_own_address_and_host_name(wrapped, tmp_path):
    agent = wrapped("run", env={"GATEWAY_AGENT_HEARTBEAT_SECONDS": "0.2"})
    agent.pids()
    registry = RegistryStore(agent.registry_url)
    try:
        host = socket.gethostname()
        wait_until(lambda: _replicas(registry), "the replica registered", 30)
        (row,) = registry.replicas()
        assert (row.replica_id, row.host, row.address) == (host, host, f"http://{socket.gethostbyname(host)}:8080")
        # The heartbeat every 0.2 s (GATEWAY_AGENT_HEARTBEAT_SECONDS), not the default 5 s.
        first = row.heartbeat_at
        time.sleep(1.5)
        (row,) = registry.replicas()
        assert (row.heartbeat_at - first).total_seconds() >= 0.6
    finally:
        registry.close()
    agent.process.send_signal(signal.SIGTERM)
    assert agent.wait() == 3


def test_without_a_command_the_agent_runs_until_sigterm_and_exits_0(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
           "GATEWAY_ARTIFACT_STORE_DIR": str(tmp_path / "artifacts")}  # fmt: skip
    argv = [sys.executable, "-m", "gateway.cli", "agent", "--stack", "tfserving", "--management-url",
            f"127.0.0.1:{free_port()}", "--inference-url", "x:1", "--replica-id", "tf-9",
            "--model-dir", str(tmp_path / "local")]  # fmt: skip
    process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        registry = RegistryStore(env["GATEWAY_DATABASE_URL"])
        wait_until(lambda: Path(tmp_path / "r.db").is_file() and _replicas(registry), "registered", 30)
        registry.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _replicas(registry: RegistryStore) -> list:
    try:
        return registry.replicas()
    except Exception:  # the schema is not there yet
        return []


def test_templates_expand_to_the_host_name_and_its_address():
    host = socket.gethostname()
    ip = socket.gethostbyname(host)
    assert expand("http://{ip}:8080", host) == f"http://{ip}:8080"
    assert expand("{host}-ts", host) == f"{host}-ts"
    assert expand("http://10.0.0.5:8080", host) == "http://10.0.0.5:8080"


def test_exit_codes_as_a_shell_reports_them():
    assert (exit_code(0), exit_code(7), exit_code(-signal.SIGTERM), exit_code(-signal.SIGKILL)) == (0, 7, 143, 137)


def test_heartbeat_and_retry_come_from_the_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("GATEWAY_AGENT_HEARTBEAT_SECONDS", "1.5")
    monkeypatch.setenv("GATEWAY_AGENT_RETRY_FAILED_SECONDS", "12")
    config = agent_config(Settings(), "torchserve", "http://{host}:8080", None, str(tmp_path), "ts-a", 2.0)
    assert (config.heartbeat_seconds, config.retry_failed_seconds) == (1.5, 12.0)
    assert (config.replica_id, config.address, config.host) == ("ts-a", "http://ts-a:8080", "ts-a")
    monkeypatch.delenv("GATEWAY_AGENT_HEARTBEAT_SECONDS")
    monkeypatch.delenv("GATEWAY_AGENT_RETRY_FAILED_SECONDS")
    config = agent_config(Settings(), "torchserve", "u", "id-{host}", str(tmp_path), "h", 2.0)
    assert (config.heartbeat_seconds, config.retry_failed_seconds, config.replica_id) == (5.0, 60.0, "id-h")


@pytest.mark.parametrize("name", ["GATEWAY_AGENT_HEARTBEAT_SECONDS", "GATEWAY_AGENT_RETRY_FAILED_SECONDS"])
def test_agent_intervals_must_be_positive(monkeypatch, name):
    monkeypatch.setenv(name, "0")
    with pytest.raises(ValueError, match=name.removeprefix("GATEWAY_").lower()):
        Settings()
