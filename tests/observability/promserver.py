"""A real Prometheus server of a test's own, run with the project's deploy/prometheus/prometheus.yml
with only its targets and intervals replaced (tests/e2e/test_observability.py against the local stack,
tests/observability/test_replicas.py against exporters of the per-replica series)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.deploy.conftest import job_targets
from tests.observability.tools import PROMETHEUS_DIR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_config(text: str, targets: dict[str, str | list[str]], interval: str) -> str:
    """The project's prometheus.yml with its targets and its intervals replaced, nothing else: each
    job's targets (static, or DNS names with their port) become the mapped static targets (one
    target may map to several, e.g. several gateway replicas behind one DNS name)."""
    config = yaml.safe_load(text)
    config["global"] = {**config["global"], "scrape_interval": interval, "evaluation_interval": interval}
    for job in config["scrape_configs"]:
        theirs = job_targets(job)
        assert all(t in targets for t in theirs), f"no local target for {theirs}"
        job.pop("dns_sd_configs", None)
        mapped = [targets[t] for t in theirs]
        job["static_configs"] = [{"targets": [a for m in mapped for a in ([m] if isinstance(m, str) else m)]}]
    return yaml.safe_dump(config, sort_keys=False)


class Prometheus:
    """A Prometheus server of the test's own, on a free port; stopped whatever happens."""

    def __init__(self, binary: str, workdir: Path, config_text: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "prometheus.yml"
        self.config.write_text(config_text)
        # rule_files stay "rules/...": relative to the config file, so the rules sit beside it.
        (workdir / "rules").symlink_to(PROMETHEUS_DIR / "rules", target_is_directory=True)
        self.log = workdir / "prometheus.log"
        self.argv = [
            binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def start(self, timeout: float = 30.0) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if self.client.get("/-/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.client.close()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def api(self, path: str, **params: Any) -> Any:
        response = self.client.get(f"/api/v1/{path}", params=params)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{path} {params}: {response.text}"
        return body["data"]

    def query(self, expr: str) -> dict[str, Any]:
        response = self.client.get("/api/v1/query", params={"query": expr})
        body: dict[str, Any] = response.json()
        return body

    def wait_for(self, what: str, check: Any, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.25)
        raise AssertionError(f"prometheus: {what} not within {timeout}s")
