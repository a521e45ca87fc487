"""The example model store, built once per session into a temporary directory (about 10 s on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store holding every example version, built once."""
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    pytest.importorskip("model_archiver")
    from examples import build_models

    path = tmp_path_factory.mktemp("model_store")
    build_models.build_all(path, log=lambda _: None)
    return path
