"""The engine the suite starts keeps images and containers on overlay2 where the kernel has it:
on vfs (a full copy of every layer and of every container's tree) the suite filled a CI machine's
disk. Falling back to vfs where overlay2 cannot start is checked without an engine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.compose import engine as engine_module
from tests.compose.conftest import ComposeStack


def kernel_has_overlay() -> bool:
    return any(line.split()[-1] == "overlay" for line in Path("/proc/filesystems").read_text().splitlines())


def test_the_engine_started_here_uses_overlay2_where_the_kernel_has_it(compose_stack: ComposeStack):
    if not compose_stack.started_driver:
        pytest.skip("an engine was already running: its storage driver is its owner's choice")
    driver = subprocess.run([compose_stack.docker, "info", "--format", "{{.Driver}}"], capture_output=True,
                            text=True, timeout=60, check=True).stdout.strip()  # fmt: skip
    assert driver == compose_stack.started_driver
    if kernel_has_overlay():
        assert driver == "overlay2"


def test_a_driver_that_does_not_start_is_followed_by_the_next(tmp_path, monkeypatch):
    tried = []

    def start(self, driver):
        tried.append(driver)
        return driver == "vfs"

    monkeypatch.setattr(engine_module.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(engine_module, "docker_cli", lambda: "/usr/bin/docker")
    monkeypatch.setattr(engine_module.Engine, "answers", lambda self: False)
    monkeypatch.setattr(engine_module.os, "geteuid", lambda: 0)
    monkeypatch.setattr(engine_module.Engine, "_start", start)
    engine = engine_module.Engine(tmp_path)
    engine.start()
    assert tried == ["overlay2", "vfs"]
    assert engine.driver == "vfs"


@pytest.mark.parametrize("own_engine", [True, False])
def test_buildkits_cache_is_emptied_only_on_an_engine_the_tests_started(monkeypatch, own_engine):
    """Superseded images go by the tests' label on any engine; BuildKit's cache has no label, so it
    is emptied only on an engine the tests started (never on a developer's own)."""
    from tests.compose import images

    ran: list[list[str]] = []
    monkeypatch.setattr(images, "run", lambda argv, **kw: ran.append(argv) or "")
    images.Images("docker", prune_build_cache=own_engine).prune()
    assert ran[0] == ["docker", "image", "prune", "--force", "--filter", f"label={images.LABEL}"]
    assert (["docker", "builder", "prune", "--force"] in ran) is own_engine
