"""A backend that restarted gets back what the registry says it serves, without an operator."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.core.types import VersionStatus

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
        async with deployer.service.locks.hold("tfserving"):
            return await deployer.restore("tfserving")

    assert client.portal.call(during_a_deploy) == []
    assert restore(client, "tfserving") == [("toy", 2)]


def test_restore_waits_while_another_replica_changes_the_backend(client, fake_backends):
    """The lock is the registry's: a holder elsewhere (here a second holder of the SQLite
    registry's lock file, as a second gateway process on the same file would be) keeps it out."""
    fake_backends["tfserving"].unloaded.add(("toy", 2))
    registry = client.app.state.registry  # type: ignore[union-attr]
    release = registry.lock("backend:tfserving", timeout=5)
    try:
        assert restore(client, "tfserving") == []
        assert restore(client, "torchserve") == []  # another backend's lock is another lock
    finally:
        release()
    assert restore(client, "tfserving") == [("toy", 2)]


def test_retire_rewrites_the_start_up_file_without_the_version(client, fake_backends):
    tf = fake_backends["tfserving"]
    assert tf.startup is not None and 2 in tf.startup[0]["toy"]  # written at start-up
    answer = client.post("/admin/models/toy/versions/2/retire", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert 2 not in tf.startup[0].get("toy", [])


def test_restore_works_from_the_routing_table_while_the_registry_is_down(client, fake_backends, monkeypatch):
    """The cross-replica lock lives in the registry; with the registry gone nobody can deploy or
    retire, and a backend that restarted still gets its versions back."""
    from gateway.registry.records import RegistryUnavailable

    registry = client.app.state.registry  # type: ignore[union-attr]

    def down(*args: object, **kwargs: object) -> None:
        raise RegistryUnavailable("registry database is unavailable: connection refused")

    monkeypatch.setattr(registry, "lock", down)
    monkeypatch.setattr(registry, "snapshot", down)
    fake_backends["tfserving"].unloaded.add(("toy", 2))
    assert restore(client, "tfserving") == [("toy", 2)]
