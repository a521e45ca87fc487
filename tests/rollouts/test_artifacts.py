"""Deploy uploads can never write outside their temp directory, and broken archives say so."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from gateway.errors import DeployFailed
from gateway.rollouts.artifacts import mar_version, unpack
from gateway.routing.discovery import scan_store
from tests.fakes import write_mar

ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}


def tar_bytes(add) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        add(tar)
    return buf.getvalue()


def member(tar: tarfile.TarFile, name: str, data: bytes = b"x", **kw) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


@pytest.mark.parametrize(
    ("add", "what"),
    [
        (lambda t: member(t, "../escape.txt"), "outside"),
        (lambda t: member(t, "link", type=tarfile.SYMTYPE, linkname="/etc/passwd"), "symlink"),
        (lambda t: member(t, "hard", type=tarfile.LNKTYPE, linkname="../../outside"), "hard link"),
    ],
)
def test_traversal_and_link_escapes_are_refused(tmp_path: Path, add, what):
    archive = tmp_path / "upload.tar"
    archive.write_bytes(tar_bytes(add))
    into = tmp_path / "work"
    into.mkdir()
    with pytest.raises(DeployFailed) as err:
        unpack(archive, into)
    assert err.value.step == "unpack" and err.value.status_code == 400
    assert not (tmp_path / "escape.txt").exists()


def test_absolute_names_land_inside_the_temp_directory(tmp_path: Path):
    archive = tmp_path / "upload.tar"
    archive.write_bytes(tar_bytes(lambda t: member(t, "/tmp/evil-from-tar.txt")))
    into = tmp_path / "work"
    into.mkdir()
    unpack(archive, into)
    assert (into / "tmp" / "evil-from-tar.txt").is_file()
    assert not Path("/tmp/evil-from-tar.txt").exists()


def test_the_admin_api_refuses_a_traversal_upload_with_400(client, fake_store):
    body = tar_bytes(lambda t: member(t, "../../../outside.txt"))
    r = client.post("/admin/models/toy/deploy", content=body, headers=ADMIN)
    assert r.status_code == 400
    assert r.json()["error"].startswith("deploy failed at step 'unpack': the upload is not a readable tar archive")
    assert not (fake_store.parent.parent / "outside.txt").exists()
    history = client.get("/admin/history?model=toy&limit=1", headers=ADMIN).json()["history"][0]
    assert (history["action"], history["outcome"], history["detail"]["step"]) == ("deploy", "failed", "unpack")


def version_tar(tmp_path: Path, manifest_version: str) -> bytes:
    """A deploy upload: a version directory whose .mar's manifest states ``manifest_version``."""
    directory = tmp_path / "upload" / "toy"
    write_mar(directory, "toy", manifest_version)
    for name in ("signature.json", "sample_input.json", "sample_output.json"):
        (directory / name).write_text("{}")
    return tar_bytes(lambda t: t.add(directory, arcname="toy"))


def test_mar_manifest_version_is_read_exactly(tmp_path: Path):
    write_mar(tmp_path, "m", "3.0")
    assert mar_version(tmp_path) == "3.0"
    write_mar(tmp_path, "m", "3")
    assert mar_version(tmp_path) == "3"


@pytest.mark.parametrize(
    ("manifest", "query", "message"),
    [
        (
            "1.0",
            "",
            "the archive's manifest states version '1.0', but TorchServe keys versions by their exact string "
            "('1.0' is not '1') and the gateway addresses versions as plain integers; rebuild it with "
            "torch-model-archiver --version 4",
        ),
        (
            "5.0",
            "?version=5",
            "the archive's manifest states version '5.0', but TorchServe keys versions by their exact string "
            "('1.0' is not '1') and the gateway addresses versions as plain integers; rebuild it with "
            "torch-model-archiver --version 5",
        ),
        (
            "6",
            "?version=5",
            "the archive's manifest states version '6', but the deploy asks for version 5; rebuild it with "
            "torch-model-archiver --version 5",
        ),
        ("05", "?version=5", "the archive's manifest states version '05', but TorchServe keys versions"),
    ],
)
def test_a_mar_whose_version_is_not_exactly_the_deploys_is_refused(client, tmp_path, manifest, query, message):
    r = client.post(f"/admin/models/toy/deploy{query}", content=version_tar(tmp_path, manifest), headers=ADMIN)
    assert r.status_code == 400
    assert r.json()["error"].startswith(f"deploy failed at step 'validate': {message}")
    assert not (tmp_path / "store" / "toy" / "4").exists() and not (tmp_path / "store" / "toy" / "5").exists()


def test_a_mar_stating_exactly_the_version_passes_validation(client, tmp_path):
    r = client.post("/admin/models/toy/deploy", content=version_tar(tmp_path, "4"), headers=ADMIN)
    assert "step 'validate'" not in r.json()["error"]  # the empty samples fail later, at the smoke step
    assert r.json()["error"].startswith("deploy failed at step 'smoke'")


def test_adoption_skips_archives_torchserve_would_key_under_another_version(tmp_path: Path):
    store = tmp_path / "store"
    write_mar(store / "mlp" / "1", "mlp", "1.0")  # TorchServe would register "1.0", never "1"
    write_mar(store / "mlp" / "2", "mlp", "2")
    write_mar(store / "mlp" / "03", "mlp", "3")  # not how the gateway writes version 3
    (store / "mlp" / "4").mkdir()
    (store / "mlp" / "4" / "saved_model.pb").write_bytes(b"")
    assert [(v.model, v.version, v.backend) for v in scan_store(store)] == [
        ("mlp", 2, "torchserve"),
        ("mlp", 4, "tfserving"),
    ]
