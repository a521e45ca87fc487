"""The artifact store, both implementations: a version is stored once, immutably, with its
manifest; fetching writes all of it, checked, or nothing. S3 runs against a real moto server."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import obstore
import pytest
from obstore.store import S3Store

from gateway.artifacts import (
    ArtifactConflict,
    ArtifactCorrupt,
    ArtifactError,
    ArtifactMissing,
    LocalArtifactStore,
    manifest_of,
    open_store,
)
from gateway.artifacts.s3 import S3ArtifactStore
from gateway.settings import Settings
from tests.s3fixtures import moto_endpoint, s3_bucket  # noqa: F401


def version_dir(root: Path, content: bytes = b"weights", big: int = 0) -> Path:
    root.mkdir(parents=True)
    (root / "model.mar").write_bytes(content)
    (root / "signature.json").write_text('{"inputs": []}')
    (root / "variables").mkdir()
    (root / "variables" / "data").write_bytes(os.urandom(big) if big else b"v")
    return root


def raw_bucket(endpoint: str, bucket: str) -> S3Store:
    """The bucket itself, past the artifact store (to look at or tamper with its objects)."""
    return S3Store(bucket, endpoint=endpoint, client_options={"allow_http": True})


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    endpoint = request.getfixturevalue("moto_endpoint")
    return S3ArtifactStore(request.getfixturevalue("s3_bucket"), prefix="team/models", endpoint=endpoint)


async def test_put_then_fetch_gives_the_same_files_and_manifest(store, tmp_path):
    source = version_dir(tmp_path / "src")
    manifest, created = await store.put("mlp", 4, source)
    assert created
    assert manifest == manifest_of("mlp", 4, source)
    assert [f.path for f in manifest.files] == ["model.mar", "signature.json", "variables/data"]
    assert await store.manifest("mlp", 4) == manifest
    assert await store.manifest("mlp", 5) is None
    got = await store.fetch("mlp", 4, tmp_path / "replica" / "mlp" / "4")
    assert got.digest == manifest.digest
    assert files_of(tmp_path / "replica" / "mlp" / "4") == files_of(source)


async def test_the_same_content_again_is_a_no_op_and_other_content_is_refused(store, tmp_path):
    first, _ = await store.put("mlp", 4, version_dir(tmp_path / "a"))
    again, created = await store.put("mlp", 4, version_dir(tmp_path / "b"))
    assert (again, created) == (first, False)
    with pytest.raises(ArtifactConflict, match=r"already stored with other content.*immutable"):
        await store.put("mlp", 4, version_dir(tmp_path / "c", b"other weights"))
    assert await store.manifest("mlp", 4) == first
    into = tmp_path / "replica"
    await store.fetch("mlp", 4, into)
    assert (into / "model.mar").read_bytes() == b"weights"


async def test_two_puts_of_one_version_at_once_store_exactly_one_content(store, tmp_path):
    a, b = version_dir(tmp_path / "a", b"A"), version_dir(tmp_path / "b", b"B")
    results = await asyncio.gather(store.put("m", 1, a), store.put("m", 1, b), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["ArtifactConflict", "tuple"]
    winner = next(r for r in results if isinstance(r, tuple))[0]
    assert await store.manifest("m", 1) == winner
    await store.fetch("m", 1, tmp_path / "got")
    assert (tmp_path / "got" / "model.mar").read_bytes() in (b"A", b"B")


async def test_fetching_a_version_not_stored_says_so_and_writes_nothing(store, tmp_path):
    with pytest.raises(ArtifactMissing, match=r"mlp v9 .*not stored"):
        await store.fetch("mlp", 9, tmp_path / "replica" / "mlp" / "9")
    assert not (tmp_path / "replica" / "mlp" / "9").exists()


async def test_a_large_file_round_trips(store, tmp_path):
    source = version_dir(tmp_path / "src", big=20 * 1024 * 1024 + 17)  # several parts of 8 MiB
    await store.put("big", 1, source)
    await store.fetch("big", 1, tmp_path / "got")
    assert files_of(tmp_path / "got") == files_of(source)


async def test_local_fetch_refuses_a_file_changed_after_it_was_stored(tmp_path):
    store = LocalArtifactStore(tmp_path / "artifacts")
    await store.put("mlp", 1, version_dir(tmp_path / "src"))
    (tmp_path / "artifacts" / "mlp" / "1" / "model.mar").write_bytes(b"tampered")
    with pytest.raises(ArtifactCorrupt, match=r"model\.mar does not match its manifest"):
        await store.fetch("mlp", 1, tmp_path / "got")
    assert not (tmp_path / "got").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".got")]  # no half-written leftovers


async def test_s3_fetch_refuses_an_object_changed_after_it_was_stored(tmp_path, moto_endpoint, s3_bucket):  # noqa: F811
    store = S3ArtifactStore(s3_bucket, endpoint=moto_endpoint)
    manifest, _ = await store.put("mlp", 1, version_dir(tmp_path / "src"))
    key = f"mlp/1/{manifest.digest}/model.mar"
    await obstore.put_async(raw_bucket(moto_endpoint, s3_bucket), key, b"weightz")  # same size
    with pytest.raises(ArtifactCorrupt, match=r"model\.mar does not match its manifest"):
        await store.fetch("mlp", 1, tmp_path / "got")
    assert not (tmp_path / "got").exists()


async def test_s3_layout_files_under_their_digest_and_the_manifest_beside(tmp_path, moto_endpoint, s3_bucket):  # noqa: F811
    store = S3ArtifactStore(s3_bucket, prefix="p", endpoint=moto_endpoint)
    manifest, _ = await store.put("mlp", 2, version_dir(tmp_path / "src"))
    bucket = raw_bucket(moto_endpoint, s3_bucket)
    stored = json.loads(bytes(await (await obstore.get_async(bucket, "p/mlp/2/manifest.json")).bytes_async()))
    assert stored["digest"] == manifest.digest
    assert stored["files"][0] == {"path": "model.mar", "size": 7, "sha256": manifest.files[0].sha256}
    data = await obstore.get_async(bucket, f"p/mlp/2/{manifest.digest}/variables/data")
    assert bytes(await data.bytes_async()) == b"v"


async def test_an_unreachable_s3_endpoint_is_an_artifact_error(tmp_path):
    from localstack import free_port

    store = S3ArtifactStore("b", endpoint=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ArtifactError, match=r"mlp v1 in s3://b at http://127\.0\.0\.1:\d+: cannot read the manifest"):
        await store.put("mlp", 1, version_dir(tmp_path / "src"))


async def test_the_local_store_on_the_model_store_copies_nothing(tmp_path):
    store_dir = tmp_path / "model_store"
    source = version_dir(store_dir / "mlp" / "1")
    store = LocalArtifactStore(store_dir)
    manifest, created = await store.put("mlp", 1, source)
    assert created
    assert sorted(p.name for p in store_dir.iterdir()) == [".artifacts", "mlp"]
    assert json.loads((store_dir / ".artifacts" / "mlp" / "1.json").read_text())["digest"] == manifest.digest
    assert files_of(source)["model.mar"] == b"weights"


def test_settings_choose_the_store(tmp_path):
    local = open_store(Settings(model_store=tmp_path / "store"))
    assert isinstance(local, LocalArtifactStore) and local.root == tmp_path / "store"
    s3 = open_store(Settings(artifact_store="s3", artifact_s3_bucket="bkt", artifact_s3_prefix="x/",
                             artifact_s3_endpoint="http://127.0.0.1:9"))  # fmt: skip
    assert isinstance(s3, S3ArtifactStore) and s3.description == "s3://bkt/x at http://127.0.0.1:9"
    with pytest.raises(ValueError, match="GATEWAY_ARTIFACT_STORE=s3 needs GATEWAY_ARTIFACT_S3_BUCKET"):
        Settings(artifact_store="s3")


async def test_the_local_store_fetches_a_version_placed_without_a_manifest(tmp_path):
    store_dir = tmp_path / "model_store"
    source = version_dir(store_dir / "mlp" / "1")  # adopted from the model store: no manifest
    store = LocalArtifactStore(store_dir)
    assert await store.manifest("mlp", 1) is None
    got = await store.fetch("mlp", 1, tmp_path / "replica")
    assert got == manifest_of("mlp", 1, source)
    assert files_of(tmp_path / "replica") == files_of(source)
    assert not (store_dir / ".artifacts").exists()  # nothing written to the store
