"""Deploy uploads can never write outside their temp directory, and broken archives say so."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from gateway.errors import DeployFailed
from gateway.rollouts.artifacts import mar_version, unpack

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


def test_mar_manifest_version_is_read_and_checked(tmp_path: Path):
    def mar(version: str) -> None:
        with zipfile.ZipFile(tmp_path / "m.mar", "w") as z:
            z.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelVersion": version}}))

    mar("3.0")
    assert mar_version(tmp_path) == 3
    mar("1.5")
    with pytest.raises(DeployFailed, match="not a positive integer"):
        mar_version(tmp_path)


@pytest.mark.parametrize(
    "add",
    [
        lambda t: member(t, "../escape.txt"),
        lambda t: member(t, "/abs.txt"),
        lambda t: member(t, "link", type=tarfile.SYMTYPE, linkname="mlp.mar"),
        lambda t: member(t, "hard", type=tarfile.LNKTYPE, linkname="../../outside"),
        lambda t: member(t, "dev", type=tarfile.CHRTYPE),
    ],
)
def test_without_the_data_filter_only_plain_relative_members_unpack(tmp_path: Path, monkeypatch, add):
    """Python 3.11 before 3.11.4 (Debian bookworm's 3.11.2) has no ``data`` filter."""
    monkeypatch.delattr(tarfile, "data_filter")
    archive = tmp_path / "upload.tar"
    archive.write_bytes(tar_bytes(add))
    (into := tmp_path / "work").mkdir()
    with pytest.raises(DeployFailed) as err:
        unpack(archive, into)
    assert err.value.step == "unpack" and "not a plain file or directory" in err.value.message
    assert not (tmp_path / "escape.txt").exists() and not Path("/abs.txt").exists()


def test_without_the_data_filter_a_version_directory_unpacks(tmp_path: Path, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter")
    archive = tmp_path / "upload.tar"
    archive.write_bytes(
        tar_bytes(lambda t: (member(t, "mlp-3/signature.json", b"{}"), member(t, "mlp-3/mlp.mar", b"zip")))
    )
    (into := tmp_path / "work").mkdir()
    root = unpack(archive, into)
    assert sorted(p.name for p in root.iterdir()) == ["mlp.mar", "signature.json"]
    assert (root / "mlp.mar").read_bytes() == b"zip"
