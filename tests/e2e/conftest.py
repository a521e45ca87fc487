"""The real local stack (TorchServe, the TF Serving-compatible server, the gateway), started once
per test session on free ports, from the repository's model store. Every e2e test is marked."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from localstack import Ports

from tests.deploy.docker_stack import make_stack

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT / "model_store"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@functools.cache
def _ensure_models() -> None:
    """Run the example builder once per session: it skips complete versions in a few seconds and
    rebuilds those an older builder wrote in another format (torch.export archives, which the
    official TorchServe image cannot load)."""
    builder = ROOT / "deploy" / "examples" / "build_models.py"
    subprocess.run([sys.executable, str(builder), "--store", str(STORE)], check=True)


def copy_store(into: Path, skip: tuple[str, ...] = ()) -> Path:
    """A private, writable copy of the example model store (minus ``skip``, e.g. ``"mlp/3"``)."""
    _ensure_models()
    for version_dir in sorted(STORE.glob("*/[0-9]*")):
        name = f"{version_dir.parent.name}/{version_dir.name}"
        if name not in skip:
            shutil.copytree(version_dir, into / name)
    return into


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    store = copy_store(tmp_path_factory.mktemp("store"))
    workdir = tmp_path_factory.mktemp("stack")
    with make_stack(store, workdir, Ports.free()) as running:
        yield running


@pytest.fixture(scope="session")
def gateway(stack):
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def samples():
    """Each example version's sample input and expected output, from the model store."""

    def load(model: str, version: int) -> tuple[dict, dict]:
        path = STORE / model / str(version)
        return (
            json.loads((path / "sample_input.json").read_text()),
            json.loads((path / "sample_output.json").read_text()),
        )

    return load
