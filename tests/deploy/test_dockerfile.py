"""The gateway image: hadolint, the shape the deployments rely on, and the build context."""

from __future__ import annotations

import re
import tomllib

from docker.utils.build import exclude_paths

from gateway.settings import Settings
from tests.deploy.conftest import DOCKERFILE, ROOT, run, tool

TEXT = DOCKERFILE.read_text()


def instructions(text: str = TEXT) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(x for x in text.splitlines() if not x.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(ins)
    return found


def test_hadolint_passes_at_its_strictest():
    done = run([tool("hadolint"), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_on_a_pinned_slim_python():
    args = dict(a.split("=", 1) for w, a in instructions() if w == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", args["PYTHON_IMAGE"]), args["PYTHON_IMAGE"]
    builder, runtime = stages()
    assert builder[0][1] == "${PYTHON_IMAGE} AS builder"
    assert runtime[0][1] == "${PYTHON_IMAGE} AS runtime"
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in runtime


def test_installs_the_package_without_extras():
    pip = [a for w, a in instructions() if w == "RUN" and "pip install" in a]
    assert len(pip) == 1
    assert re.search(r"pip install --no-cache-dir \.(\s|$)", pip[0]), pip[0]
    assert "[" not in pip[0].split("pip install", 1)[1].split("&&")[0]  # no [local] / [dev]
    for heavy in ("torch", "tensorflow"):
        assert f"'{heavy}' not in sys.modules" in pip[0]


def test_runs_as_a_numeric_non_root_user_and_listens_on_all_interfaces():
    runtime = stages()[-1]
    args = dict(a.split("=", 1) for w, a in runtime if w == "ARG" and "=" in a)
    user = [a for w, a in runtime if w == "USER"][-1]
    uid = user.replace("${APP_UID}", args["APP_UID"]).split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    env = " ".join(a for w, a in runtime if w == "ENV")
    assert "GATEWAY_HOST=0.0.0.0" in env
    port = re.search(r"GATEWAY_PORT=(\d+)", env)
    assert port and int(port.group(1)) == Settings.model_fields["port"].default
    assert ("EXPOSE", port.group(1)) in runtime
    assert ("ENTRYPOINT", '["gateway"]') in runtime and ("CMD", '["serve"]') in runtime


def test_the_grpc_port_is_exposed():
    assert ("EXPOSE", str(Settings.model_fields["grpc_port"].default)) in stages()[-1]


def test_healthcheck_asks_the_readiness_route(has_route):
    check = [a for w, a in instructions() if w == "HEALTHCHECK"]
    assert len(check) == 1
    assert 'CMD ["python"' in check[0] and "curl" not in check[0]
    path = re.search(r"/v2/health/\w+", check[0])
    assert path and path.group(0) == "/v2/health/ready" and has_route(path.group(0))
    assert "GATEWAY_PORT" in check[0]


def test_the_build_context_holds_only_what_the_image_needs():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sent = exclude_paths(str(ROOT), patterns, dockerfile="deploy/docker/gateway.Dockerfile")
    for path in sent:
        top = path.split("/", 1)[0]
        assert top in {"gateway", "pyproject.toml", "README.md", "deploy", ".dockerignore"}, path
        assert "__pycache__" not in path and not path.endswith(".pyc"), path
    assert {"pyproject.toml", "README.md", "deploy/docker/stack_init.py", "gateway/app.py"} <= set(sent)
    for never in (".git", ".venv", ".local", "model_store", "tests", ".env", ".pytest_cache"):
        assert not any(p == never or p.startswith(never + "/") for p in sent), never


def test_the_image_tag_is_the_project_version(compose):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert compose["services"]["gateway"]["image"] == f"twin-stack-gateway:{version}"
    assert f"twin-stack-gateway:{version}" in TEXT  # the build command in the header
