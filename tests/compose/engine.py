"""A Docker engine for the compose tests: the one already running, or a ``dockerd`` started here.

The test machines have no engine running but can start one: Debian's ``docker.io`` package
(``make docker-engine`` installs it, see deploy/docker/lookalike/install.sh) and ``dockerd`` as
root, with the ``overlay2`` storage driver where the kernel mounts overlay file systems (layers
shared, a container holds only what it writes) and ``vfs`` where it does not (every layer and every
container a full copy of its tree: tens of GB for this stack). Whoever starts
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
import sys
import time
from pathlib import Path

import pytest

SOCKET = Path("/var/run/docker.sock")
# dockerd on 2 busy cores answers within seconds; the bound only turns a hang into a message.
START_DEADLINE_S = 120.0
STOP_DEADLINE_S = 60.0
# In order of preference: dockerd refuses to start on a driver the kernel cannot mount.
STORAGE_DRIVERS = ("overlay2", "vfs")
# Free space the suite needs where the engine keeps its data, measured on overlay2 (images built
# from nothing, the stack up with two replicas per stack: about 6 GB); vfs needs about seven times
# as much.
FREE_SPACE_GB = {"overlay2": 10, "vfs": 60}


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
        self.driver = ""  # the storage driver of the dockerd started here
        self.returncode: int | None = None

    def answers(self) -> bool:
        if not self.cli:
            return False
        done = subprocess.run([self.cli, "version", "--format", "{{.Server.Version}}"], capture_output=True, timeout=30)
        return done.returncode == 0

    def start(self) -> None:
        """Use the running engine, or start ``dockerd`` on the first storage driver that works."""
        if shutil.which("dockerd") is None:
            unavailable("dockerd is not installed (`make docker-engine` installs Debian's docker.io as root)")
        self.cli = docker_cli()
        if self.answers():
            return
        if os.geteuid() != 0:
            unavailable("no engine answers at /var/run/docker.sock and only root can start dockerd")
        self.workdir.mkdir(parents=True, exist_ok=True)
        failures = []
        for driver in STORAGE_DRIVERS:
            if self._start(driver):
                self.driver = driver
                print(f"[compose engine] dockerd started with --storage-driver={driver}", file=sys.stderr)
                return
            failures.append(f"--storage-driver={driver}: exit code {self.returncode}; its log:\n{self.log_tail()}")
        unavailable("dockerd did not start\n" + "\n".join(failures))

    def _start(self, driver: str) -> bool:
        """Start ``dockerd --storage-driver=driver``; True once it answers, else stopped again."""
        with self.log_path.open("ab") as log:
            log.write(f"--- dockerd --storage-driver={driver}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                ["dockerd", f"--storage-driver={driver}", f"--pidfile={self.workdir / 'dockerd.pid'}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_DEADLINE_S
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.returncode = self.process.poll()
                self.stop()
                return False
            time.sleep(0.5)
        return True

    def check_space(self) -> None:
        """Fail (skip outside CI) before building or starting anything when the engine's disk is
        short: "no space left on device" from the middle of `compose up` names no cause."""
        info = subprocess.run([self.cli, "info", "--format", "{{.Driver}} {{.DockerRootDir}}"],
                              capture_output=True, text=True, timeout=60, check=True).stdout.split()  # fmt: skip
        driver, root = info[0], Path(info[1])
        need = FREE_SPACE_GB.get(driver, max(FREE_SPACE_GB.values()))
        free = shutil.disk_usage(root).free / 1e9
        if free < need:
            unavailable(f"{free:.1f} GB free under {root}, where the engine (storage driver {driver}) keeps images "
                        f"and containers; the suite needs about {need} GB (`docker image prune` and "
                        "`docker builder prune` reclaim what earlier builds left)")  # fmt: skip

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
