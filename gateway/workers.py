"""``GATEWAY_WORKERS=N`` (N > 1): one supervising process and N worker processes on one port.

Each worker is ``gateway serve --worker``: the whole gateway as one process runs it (its own routing
table following the registry, backend probe, shadow runner, drain on SIGTERM), listening on the
port with ``SO_REUSEPORT`` so that the kernel spreads the connections over the workers, and on
``GATEWAY_METRICS_PORT`` the same way. What must happen once is protected across processes as it is
across replicas (the backends' locks in the registry: start-up files, restores after a backend
restart); the first worker starts alone, so the registry's migration and the adoption of the model
store into an empty registry run once, before the others start.

Metrics: the supervisor points ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory (the variable's, emptied
of an earlier run's files, or a temporary one removed at exit) before any worker starts, so every
worker writes its values there and a scrape of any worker sums them (``gateway.metrics``); when a
worker exits, its live gauges are dropped (``mark_process_dead``), its counts stay.

Signals: SIGTERM or SIGINT to the supervisor is passed on to every worker as SIGTERM (a worker
ignores SIGINT, which a terminal sends to the whole group, so each gets exactly one signal); each
drains as one process does (readiness 503 for ``GATEWAY_SHUTDOWN_DRAIN_SECONDS``, then in-flight
requests finish) and the supervisor exits when all have. A worker that dies on its own (killed, or
failing after its first seconds) is started again; one that exits with an error in its first
seconds stops them all (a start-up failure, e.g. a port taken or a bad setting).
A worker whose supervisor disappears stops by itself.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from gateway.settings import Settings

log = logging.getLogger("gateway.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: A worker that exits with an error this soon after it started failed to start: stop, do not
#: restart it in a loop.
START_FAILURE_SECONDS = 10.0
#: How long the first worker may take to listen before the others start anyway.
FIRST_START_SECONDS = 120.0


def metrics_dir() -> tuple[Path, bool]:
    """The multiprocess metrics directory, emptied of an earlier run's files; True if it is ours to remove."""
    given = os.environ.get(MULTIPROC_ENV)
    if not given:
        return Path(tempfile.mkdtemp(prefix="gateway-metrics-")), True
    path = Path(given)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # an earlier run's counts must not add to this one's
        stale.unlink()
    return path, False


def _probe_host(host: str) -> str:
    """Where this machine reaches a server listening on ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


class Supervisor:
    """Starts, restarts and stops the workers; see the module's docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.count = settings.workers
        self.dir, self.owned = metrics_dir()
        self.env = {
            **os.environ,
            MULTIPROC_ENV: str(self.dir),
            "GATEWAY_HOST": settings.host,
            "GATEWAY_PORT": str(settings.port),
        }
        self.workers: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self.stopping = False

    def spawn(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--worker"], env=self.env)
        self.workers[proc.pid] = (proc, time.monotonic())
        log.info("worker %d started", proc.pid)
        return proc

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.workers))
        self.stopping = True
        for proc, _ in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def listening(self, proc: subprocess.Popen[bytes]) -> bool:
        """Wait until the first worker answers ``/v2/health/live`` (False if it exited first)."""
        deadline = time.monotonic() + FIRST_START_SECONDS
        host = _probe_host(self.settings.host)
        while time.monotonic() < deadline and not self.stopping:
            if proc.poll() is not None:
                return False
            conn = http.client.HTTPConnection(host, self.settings.port, timeout=2)
            try:
                conn.request("GET", "/v2/health/live")
                if conn.getresponse().status == 200:
                    return True
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.1)
        return True

    def reap(self) -> int | None:
        """Deal with the workers that exited (polled five times a second); an exit status when the
        supervisor must stop."""
        exited = [(pid, proc, started) for pid, (proc, started) in self.workers.items() if proc.poll() is not None]
        if not exited:
            time.sleep(0.2)
        from prometheus_client.multiprocess import mark_process_dead

        status = None
        for pid, proc, started in exited:
            del self.workers[pid]
            mark_process_dead(pid, str(self.dir))  # type: ignore[no-untyped-call]
            if self.stopping:
                log.info("worker %d stopped (%s)", pid, proc.returncode)
            elif proc.returncode > 0 and time.monotonic() - started < START_FAILURE_SECONDS:
                log.error("worker %d exited at start (%s): stopping", pid, proc.returncode)
                self.on_signal(signal.SIGTERM, None)
                status = 1
            else:  # killed (e.g. out of memory) or failed after starting: another takes its place
                log.warning("worker %d exited (%s): starting another", pid, proc.returncode)
                if time.monotonic() - started < START_FAILURE_SECONDS:
                    time.sleep(1.0)  # no tight loop of workers dying young
                self.spawn()
        return status

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.on_signal)
        log.info("%d workers on %s:%d, metrics in %s", self.count, self.settings.host, self.settings.port, self.dir)
        status = 0
        try:
            if self.listening(self.spawn()) and not self.stopping:
                for _ in range(self.count - 1):
                    self.spawn()
            while self.workers:
                status = self.reap() or status
        finally:
            if self.owned:
                shutil.rmtree(self.dir, ignore_errors=True)
        return status


def shared_socket(host: str, port: int) -> socket.socket:
    """A worker's listening socket on ``host:port``, which the other workers bind too (``SO_REUSEPORT``)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def stop_when_orphaned(stop: Callable[[], None]) -> None:
    """Call ``stop`` (from a thread) once this worker's supervisor is gone, e.g. killed."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        stop()

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def supervise(settings: Settings) -> int:
    """Run ``settings.workers`` workers until told to stop; the exit status."""
    return Supervisor(settings).run()
