"""The backend replicas' image (deploy/docker/backend.Dockerfile): hadolint, the agent beside the
server without touching it, and the build context it needs (the compose tests build and run it)."""

from __future__ import annotations

from docker.utils.build import exclude_paths

from tests.deploy.conftest import ROOT, run, tool

DOCKERFILE = ROOT / "deploy" / "docker" / "backend.Dockerfile"
INSTALL = ROOT / "deploy" / "docker" / "agent" / "install.sh"


def test_hadolint_passes_at_its_strictest():
    done = run([tool("hadolint"), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_agent_is_the_entry_point_and_stays_off_the_servers_path():
    text = DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["/opt/agent/bin/gateway", "agent"]' in text
    assert "PATH" not in "".join(line for line in text.splitlines() if line.startswith("ENV"))
    # Its own virtual environment, from the wheels only, checked free of torch and tensorflow.
    script = INSTALL.read_text()
    assert "python3.11 -m venv /opt/agent" in script and "--no-index" in script
    assert "'torch', 'tensorflow'" in script


def test_the_build_context_holds_what_the_dockerfile_reads():
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    sent = set(exclude_paths(str(ROOT), ignore))
    assert "deploy/docker/agent/install.sh" in sent
    assert {"pyproject.toml", "README.md", "gateway/agent/run.py"} <= sent
    assert not any(p.startswith((".git/", ".venv/", "model_store/", "k8s/")) for p in sent)
