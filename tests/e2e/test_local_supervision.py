"""``make run`` keeps the local stack up: the launcher (``deploy/localstack.py run``) restarts a
backend or a gateway that dies, the gateway keeps answering meanwhile, and Ctrl-C still stops every
process it started. The launcher runs here as ``make run`` runs it, as a subprocess, on free ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from localstack import free_port

from tests.e2e.conftest import copy_store

ROOT = Path(__file__).resolve().parents[2]
ROW = {"instances": [[0.1, 0.2, 0.3, 0.4]]}
START_DEADLINE = 420.0  # a cold TorchServe and TensorFlow import on a busy 2-core machine


def _processes() -> dict[int, tuple[int, int, int]]:
    """``{pid: (parent, process group, session)}`` of every live process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return table


def _descendants(root: int) -> set[int]:
    table = _processes()
    found, frontier = set(), {root}
    while frontier:
        children = {pid for pid, (parent, _, _) in table.items() if parent in frontier} - found
        found |= children
        frontier = children
    return found


def _sessions(root: int) -> set[int]:
    """The sessions of ``root`` and of everything it started (each service runs in its own)."""
    table = _processes()
    return {table[pid][2] for pid in _descendants(root) | {root} if pid in table}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _service_leader(launcher: int, marker: str) -> int:
    """The pid (and process group) of the launcher's child whose command line holds ``marker``."""
    table = _processes()
    leaders = [pid for pid, (parent, _, _) in table.items() if parent == launcher and marker in _cmdline(pid)]
    assert len(leaders) == 1, (marker, leaders)
    return leaders[0]


def _until(check: Callable[[], bool], seconds: float, what: str, launcher: subprocess.Popen, log: Path) -> None:
    """Poll ``check``; fail at once if the launcher exits, with the launcher's output."""
    deadline = time.monotonic() + seconds
    while not check():
        if launcher.poll() is not None:
            pytest.fail(f"the launcher exited ({launcher.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {seconds:.0f}s:\n{log.read_text()[-4000:]}")
        time.sleep(0.25)


def test_run_restarts_a_dead_torchserve_and_gateway_and_ctrl_c_leaves_nothing(tmp_path):
    store = copy_store(tmp_path / "store", skip=("mlp/3", "cnn/1"))
    gateway_port, ts_port = free_port(), free_port()
    log = tmp_path / "launcher.log"
    argv = [
        sys.executable, str(ROOT / "deploy" / "localstack.py"), "run", "--store", str(store),
        "--workdir", str(tmp_path / "work"), "--free-ports", "--port", f"gateway={gateway_port}",
        "--port", f"ts_inference={ts_port}", "--restart-delay", "0.5",
    ]  # fmt: skip
    env = {**os.environ, "GATEWAY_ADMIN_TOKEN": "supervision-token-0123456789"}
    with log.open("wb") as out:
        launcher = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{gateway_port}"
    torchserve_v1 = f"{base}/v1/models/mlp/versions/1:predict"
    answers: list[int] = []

    def torchserve_answers() -> bool:
        try:
            status = httpx.post(torchserve_v1, json=ROW, timeout=10).status_code
        except httpx.TransportError:
            return False
        answers.append(status)
        return status == 200

    sessions: set[int] = set()
    try:
        _until(torchserve_answers, START_DEADLINE, "serving mlp v1 from TorchServe", launcher, log)
        gateway = _service_leader(launcher.pid, "gateway.cli")
        torchserve = _service_leader(launcher.pid, "--foreground")
        sessions |= _sessions(launcher.pid)

        # TorchServe dies (frontend, workers, the whole group): the gateway stays up and answers
        # (an error while the backend is down), and the launcher brings TorchServe back.
        os.killpg(torchserve, signal.SIGKILL)
        _until(lambda: not httpx.post(torchserve_v1, json=ROW, timeout=10).is_success, 30,
               "answering an error for the dead backend", launcher, log)  # fmt: skip
        answers.clear()
        _until(torchserve_answers, START_DEADLINE, "serving mlp v1 from a restarted TorchServe", launcher, log)
        assert answers[-1] == 200 and all(isinstance(s, int) for s in answers)  # the gateway never went away
        assert _service_leader(launcher.pid, "gateway.cli") == gateway
        assert _service_leader(launcher.pid, "--foreground") != torchserve
        text = log.read_text()
        assert "torchserve was killed by SIGKILL; restart 1 in 0.5s" in text, text[-4000:]
        # The gateway's probe may restore mlp v1 before the launcher's restart returns (it waits
        # for TorchServe's start-up registrations too): the log line can come a moment later.
        _until(lambda: "torchserve is back" in log.read_text(), 60, "logging torchserve is back", launcher, log)
        sessions |= _sessions(launcher.pid)

        # The gateway dies: it is started again too, and TF Serving's versions answer through it.
        os.killpg(gateway, signal.SIGKILL)
        _until(lambda: "gateway is back" in log.read_text(), 120, "restarting the gateway", launcher, log)
        assert httpx.post(f"{base}/v1/models/mlp/versions/2:predict", json=ROW, timeout=10).status_code == 200
        assert torchserve_answers()
        sessions |= _sessions(launcher.pid)
    finally:
        # Ctrl-C: the launcher stops every group it started, and nothing of any is left.
        launcher.send_signal(signal.SIGINT)
        try:
            code = launcher.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            raise
        left = {pid: _cmdline(pid) for pid, (_, _, sid) in _processes().items() if sid in sessions}
        for session in sessions:  # clean up after a failure, once what was left is on record
            try:
                os.killpg(session, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert code == 0, log.read_text()[-4000:]
    assert log.read_text().rstrip().endswith("stopped.")
    # The launcher's own, TorchServe's and the gateway's before and after their restarts, TF Serving's.
    assert len(sessions) >= 6, sessions
    assert not left, left
