"""A backend that restarted gets back what the registry says it serves, without an operator."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.backends.base import VersionStatus

ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}


@pytest.fixture
def client(settings, fake_backends):
    """The app with its background probe out of the way: the tests call restore themselves."""
    with TestClient(create_app(settings.model_copy(update={"backend_probe_seconds": 3600}), fake_backends)) as c:
        yield c


def restore(client: TestClient, kind: str) -> list[tuple[str, int]]:
    return client.portal.call(client.app.state.deployer.restore, kind)  # type: ignore[union-attr]


def test_lost_versions_are_loaded_again_and_retired_ones_are_not(client, fake_backends):
    tf = fake_backends["tfserving"]
    assert client.post("/admin/models/ints/versions/1/retire", headers=ADMIN).status_code == 409  # stable
    tf.unloaded |= {("toy", 2), ("words", 1)}  # TF Serving came back without them
    assert restore(client, "tfserving") == [("toy", 2), ("words", 1)]
    assert tf.unloaded == set()
    assert restore(client, "tfserving") == []  # nothing lost: nothing done
    assert restore(client, "torchserve") == []


def test_nothing_is_concluded_while_a_backend_cannot_be_asked(client, fake_backends, monkeypatch):
    tf = fake_backends["tfserving"]
    tf.unloaded.add(("toy", 2))

    async def unknown(model: str, version: int) -> VersionStatus:
        return VersionStatus(version, "UNKNOWN", "cannot connect")

    monkeypatch.setattr(tf, "status", unknown)
    assert restore(client, "tfserving") == []
    assert ("toy", 2) in tf.unloaded


def test_restore_waits_while_a_deploy_changes_what_is_loaded(client, fake_backends):
    fake_backends["tfserving"].unloaded.add(("toy", 2))
    deployer = client.app.state.deployer  # type: ignore[union-attr]

    async def during_a_deploy() -> list[tuple[str, int]]:
        async with deployer._locks.setdefault("toy", asyncio.Lock()):
            return await deployer.restore("tfserving")

    assert client.portal.call(during_a_deploy) == []
    assert restore(client, "tfserving") == [("toy", 2)]
