"""A Docker engine for the compose tests: the one already running, or a ``dockerd`` started here.

The test machines have no engine running but can start one: Debian's ``docker.io`` package
(``make docker-engine`` installs it, see deploy/docker/lookalike/install.sh) and ``dockerd`` as
root with the ``vfs`` storage driver (no overlay file system in these sandboxes). Whoever starts
the engine stops it again: :class:`Engine` remembers whether it started ``dockerd`` and stops only
that process, by its own id, even when the tests fail.

When no engine can be had, the tests skip saying why, except under ``CI=true``, where that is a
failure: CI is meant to run the compose suite.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

SOCKET = Path("/var/run/docker.sock")
# dockerd on 2 busy cores answers within seconds; the bound only turns a hang into a message.
START_DEADLINE_S = 120.0
STOP_DEADLINE_S = 60.0


def unavailable(reason: str) -> None:
    """Skip the compose tests, or fail them under ``CI=true``."""
    message = f"compose tests need a Docker engine: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing engine is a failure, not a skip)", pytrace=False)
    pytest.skip(message)


def docker_cli() -> str:
    """The ``docker`` command to use: one whose ``build`` runs BuildKit without a plugin.

    Debian's docker.io 20.10 client has BuildKit built in; newer clients need the buildx plugin.
    """
    candidates = [c for c in ("/usr/bin/docker", shutil.which("docker")) if c and Path(c).is_file()]
    for cli in dict.fromkeys(candidates):
        done = subprocess.run([cli, "buildx", "version"], capture_output=True, text=True, timeout=30)
        if done.returncode == 0:
            return cli
        version = subprocess.run(
            [cli, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
        if version.split(".")[0].isdigit() and int(version.split(".")[0]) < 23:
            return cli
    unavailable(f"no docker client that can build with BuildKit (tried {candidates or 'none on PATH'})")
    raise AssertionError("not reached")


class Engine:
    """The engine at ``/var/run/docker.sock``; :meth:`start` launches ``dockerd`` if none answers."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "dockerd.log"
        self.cli = ""

    def answers(self) -> bool:
        if not self.cli:
            return False
        done = subprocess.run([self.cli, "version", "--format", "{{.Server.Version}}"], capture_output=True, timeout=30)
        return done.returncode == 0

    def start(self) -> None:
        """Use the running engine, or start ``dockerd --storage-driver=vfs`` and wait for it."""
        if shutil.which("dockerd") is None:
            unavailable("dockerd is not installed (`make docker-engine` installs Debian's docker.io as root)")
        self.cli = docker_cli()
        if self.answers():
            return
        if os.geteuid() != 0:
            unavailable("no engine answers at /var/run/docker.sock and only root can start dockerd")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                ["dockerd", "--storage-driver=vfs", f"--pidfile={self.workdir / 'dockerd.pid'}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_DEADLINE_S
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                unavailable(f"dockerd did not start (exit code {self.process.returncode}); its log:\n{tail}")
            time.sleep(0.5)

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the ``dockerd`` this object started (SIGTERM, then SIGKILL); nothing else."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_DEADLINE_S)
