"""A deploy keeps the version it accepted in the artifact store (issue 15), and `gateway status`
shows the backend replicas once any has registered."""

from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.artifacts import manifest_of
from gateway.artifacts.s3 import S3ArtifactStore
from gateway.registry import RegistryStore
from tests.rollouts.test_backend_defaults import tf_version_tar
from tests.s3fixtures import moto_endpoint, s3_bucket  # noqa: F401

ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}


def test_a_deploy_records_the_version_in_the_default_store_without_copying_it(settings, fake_backends, tmp_path):
    with TestClient(create_app(settings, fake_backends)) as client:
        r = client.post("/admin/models/toy/deploy?version=4", content=tf_version_tar(tmp_path), headers=ADMIN)
        assert r.status_code == 200, r.text
    placed = settings.model_store / "toy" / "4"
    manifest = (settings.model_store / ".artifacts" / "toy" / "4.json").read_text()
    assert f'"digest": "{manifest_of("toy", 4, placed).digest}"' in manifest
    assert not list(settings.model_store.glob("**/*.tmp-*"))


async def test_a_deploy_stores_the_version_in_s3(settings, fake_backends, tmp_path, moto_endpoint, s3_bucket):  # noqa: F811
    s3 = settings.model_copy(
        update={"artifact_store": "s3", "artifact_s3_bucket": s3_bucket, "artifact_s3_endpoint": moto_endpoint}
    )
    with TestClient(create_app(s3, fake_backends)) as client:
        r = client.post("/admin/models/toy/deploy?version=4", content=tf_version_tar(tmp_path), headers=ADMIN)
        assert r.status_code == 200, r.text
    stored = await S3ArtifactStore(s3_bucket, endpoint=moto_endpoint).manifest("toy", 4)
    assert stored == manifest_of("toy", 4, settings.model_store / "toy" / "4")
    assert not (settings.model_store / ".artifacts").exists()


async def test_a_version_stored_with_other_content_fails_the_deploy_before_routing(
    settings,
    fake_backends,
    tmp_path,
    moto_endpoint,  # noqa: F811
    s3_bucket,  # noqa: F811
):
    other = tmp_path / "other"
    other.mkdir()
    (other / "saved_model.pb").write_bytes(b"something else")
    await S3ArtifactStore(s3_bucket, endpoint=moto_endpoint).put("toy", 4, other)
    s3 = settings.model_copy(
        update={"artifact_store": "s3", "artifact_s3_bucket": s3_bucket, "artifact_s3_endpoint": moto_endpoint}
    )
    with TestClient(create_app(s3, fake_backends)) as client:
        r = client.post("/admin/models/toy/deploy?version=4", content=tf_version_tar(tmp_path), headers=ADMIN)
        assert r.status_code == 409
        assert r.json()["error"].startswith("deploy failed at step 'store': toy v4 in s3://")
        assert "already stored with other content" in r.json()["error"]
        assert client.post("/v1/models/toy/versions/4:predict", json={"instances": [[1, 2, 3, 4]]}).status_code == 404
        assert ("toy", 4) in fake_backends["tfserving"].unloaded
        assert not (settings.model_store / "toy" / "4").exists()
        (entry,) = client.get("/admin/history?model=toy&limit=1", headers=ADMIN).json()["history"]
        assert (entry["outcome"], entry["detail"]["step"]) == ("failed", "store")


def test_status_shows_replicas_and_their_version_states_once_any_registered(settings, fake_backends):
    with TestClient(create_app(settings, fake_backends)) as client:
        assert "replicas" not in client.get("/admin/models", headers=ADMIN).json()
        registry = RegistryStore(settings.database_url)
        registry.register_replica("ts-0", "torchserve", "http://10.0.0.5:8080", "node-a")
        registry.report_version("ts-0", "toy", 1, "ready")
        registry.report_version("ts-0", "toy", 3, "failed", "torchserve register toy v3: bad archive")
        registry.report_version("ts-0", "other", 1, "loading")
        registry.close()
        (replica,) = client.get("/admin/models/toy", headers=ADMIN).json()["replicas"]
    assert {k: replica[k] for k in ("replica", "stack", "address", "host")} == {
        "replica": "ts-0", "stack": "torchserve", "address": "http://10.0.0.5:8080", "host": "node-a"
    }  # fmt: skip
    assert 0 <= replica["heartbeat_age_seconds"] < 60
    assert [(v["model"], v["version"], v["state"], v.get("error")) for v in replica["versions"]] == [
        ("toy", 1, "ready", None),
        ("toy", 3, "failed", "torchserve register toy v3: bad archive"),
    ]


async def test_versions_adopted_at_start_are_stored_for_the_replicas(settings, fake_backends, moto_endpoint, s3_bucket):  # noqa: F811
    s3 = settings.model_copy(
        update={"artifact_store": "s3", "artifact_s3_bucket": s3_bucket, "artifact_s3_endpoint": moto_endpoint}
    )
    store = S3ArtifactStore(s3_bucket, endpoint=moto_endpoint)
    with TestClient(create_app(s3, fake_backends)) as client:
        versions = {(m["model"], v["version"]) for m in client.get("/admin/models", headers=ADMIN).json()["models"]
                    for v in m["versions"]}  # fmt: skip
        assert ("toy", 1) in versions

        async def all_stored() -> bool:
            return all([await store.manifest(m, v) is not None for m, v in versions])

        for _ in range(100):
            if await all_stored():
                break
            await asyncio.sleep(0.1)
    for model, version in versions:
        assert await store.manifest(model, version) == manifest_of(
            model, version, settings.model_store / model / str(version)
        )


def test_with_the_default_store_the_start_writes_nothing_into_the_model_store(settings, fake_backends):
    before = {p for p in settings.model_store.rglob("*")}
    with TestClient(create_app(settings, fake_backends)) as client:
        assert client.get("/admin/models", headers=ADMIN).status_code == 200
    assert {p for p in settings.model_store.rglob("*")} - before <= {settings.model_store / ".tfserving",
            settings.model_store / ".tfserving" / "models.config", settings.model_store / ".torchserve",
            settings.model_store / ".torchserve" / "models.json"}  # fmt: skip


def _other_content(tar: bytes) -> bytes:
    """The same version upload with other bytes in its (empty) saved_model.pb."""
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(tar)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("saved_model.pb"):
                data = b"other weights"
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


async def _fail_route(*args, **kwargs):
    from gateway.rollouts.deploy import DeployFailed

    raise DeployFailed("route", "the registry is unreachable", 503)


def test_a_deploy_that_fails_after_storing_frees_the_version_number(settings, fake_backends, tmp_path, monkeypatch):
    """A failed deploy loses nothing and leaves nothing: the stored manifest is discarded, so the
    same number can later be deployed with other content (not refused as 'already stored')."""
    tar = tf_version_tar(tmp_path)
    with TestClient(create_app(settings, fake_backends)) as client:
        with monkeypatch.context() as patch:
            patch.setattr("gateway.rollouts.deploy.Deployer._route", _fail_route)
            r = client.post("/admin/models/toy/deploy?version=4", content=tar, headers=ADMIN)
            assert (r.status_code, r.json()["error"]) == (
                503,
                "deploy failed at step 'route': the registry is unreachable",
            )
        assert not (settings.model_store / ".artifacts" / "toy" / "4.json").exists()
        assert not (settings.model_store / "toy" / "4").exists()
        r = client.post("/admin/models/toy/deploy?version=4", content=_other_content(tar), headers=ADMIN)
        assert r.status_code == 200, r.text
    assert (settings.model_store / "toy" / "4" / "saved_model.pb").read_bytes() == b"other weights"


async def test_a_deploy_that_fails_after_storing_in_s3_discards_it(
    settings,
    fake_backends,
    tmp_path,
    monkeypatch,
    moto_endpoint,  # noqa: F811
    s3_bucket,  # noqa: F811
):
    s3 = settings.model_copy(
        update={"artifact_store": "s3", "artifact_s3_bucket": s3_bucket, "artifact_s3_endpoint": moto_endpoint}
    )
    store = S3ArtifactStore(s3_bucket, endpoint=moto_endpoint)
    tar = tf_version_tar(tmp_path)
    with TestClient(create_app(s3, fake_backends)) as client:
        with monkeypatch.context() as patch:
            patch.setattr("gateway.rollouts.deploy.Deployer._route", _fail_route)
            r = client.post("/admin/models/toy/deploy?version=4", content=tar, headers=ADMIN)
            assert r.status_code == 503, r.text
        assert await store.manifest("toy", 4) is None
        r = client.post("/admin/models/toy/deploy?version=4", content=_other_content(tar), headers=ADMIN)
        assert r.status_code == 200, r.text
    stored = await store.manifest("toy", 4)
    assert stored == manifest_of("toy", 4, settings.model_store / "toy" / "4")
