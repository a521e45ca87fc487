"""Fixtures build on each other: settings -> model store -> app -> client (unit tests), and
the real local stack, started once per session, for the end-to-end tests (tests/e2e)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from tests.fakes import FakeBackend, make_version

ROOT = Path(__file__).resolve().parents[1]
# Unit-test apps open no gRPC port unless a test asks for one (tests/protocols/rpc); the local
# stack's gateway (e2e) gets its port from deploy/localstack.py.
os.environ.setdefault("GATEWAY_GRPC_PORT", "0")

VEC4 = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
}


@pytest.fixture
def fake_store(tmp_path: Path) -> Path:
    """A model store of placeholder artifacts: ``toy`` v1, v3 on TorchServe, v2 on TF Serving;
    ``ints`` (INT64), ``words`` (BYTES) and ``pair`` (two inputs) on TF Serving."""
    return make_fake_store(tmp_path)


def make_fake_store(tmp_path: Path) -> Path:
    """The ``fake_store`` fixture's store (and its ``state.yaml``) under ``tmp_path``; for
    fixtures with a wider scope than a function."""
    store = tmp_path / "store"
    make_version(store, "toy", 1, "torchserve", VEC4)
    make_version(store, "toy", 2, "tfserving", VEC4)
    make_version(store, "toy", 3, "torchserve", VEC4)
    make_version(store, "ints", 1, "tfserving", {
        "inputs": [{"name": "n", "datatype": "INT64", "shape": [-1]}],
        "outputs": [{"name": "m", "datatype": "INT64", "shape": [-1]}],
    })  # fmt: skip
    make_version(store, "words", 1, "tfserving", {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "echo", "datatype": "BYTES", "shape": [-1]}],
    })  # fmt: skip
    make_version(store, "pair", 1, "tfserving", {
        "inputs": [{"name": "a", "datatype": "FP32", "shape": [-1, 2]},
                   {"name": "b", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    })  # fmt: skip
    (tmp_path / "state.yaml").write_text("models:\n  toy:\n    labels:\n      stable: 1\n      canary: 3\n")
    return store


@pytest.fixture
def settings(fake_store: Path) -> Settings:
    return unit_settings(fake_store)


def unit_settings(fake_store: Path) -> Settings:
    """The ``settings`` fixture's settings for a store made by ``make_fake_store``."""
    return Settings(
        model_store=fake_store,
        state_file=fake_store.parent / "state.yaml",
        max_body_bytes=4096,
        database_url=f"sqlite:///{fake_store.parent / 'registry.db'}",
        admin_token="unit-admin-token-0123456789",
        read_token="unit-read-token-0123456789",
    )


@pytest.fixture
def fake_backends() -> dict[str, FakeBackend]:
    return make_fake_backends()


def make_fake_backends() -> dict[str, FakeBackend]:
    return {
        "torchserve": FakeBackend("torchserve", raw_passthrough=True),
        "tfserving": FakeBackend("tfserving"),
    }


@pytest.fixture
def client(settings: Settings, fake_backends: dict[str, FakeBackend]):
    with TestClient(create_app(settings, backends=fake_backends)) as c:
        yield c
