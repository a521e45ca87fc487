"""Deploy uploads can never write outside their temp directory, and broken archives say so."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.core.errors import DeployFailed
from gateway.rollouts import deploy as deploy_module
from gateway.rollouts.artifacts import DEFAULT_LIMITS, Limits, mar_version, unpack
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


def unpack_bytes(tmp_path: Path, body: bytes, limits: Limits = DEFAULT_LIMITS) -> Path:
    archive = tmp_path / "upload.tar"
    archive.write_bytes(body)
    into = tmp_path / "work"
    into.mkdir(exist_ok=True)
    return unpack(archive, into, limits)


@pytest.mark.parametrize(
    ("add", "message"),
    [
        (lambda t: member(t, "../escape.txt"), "has a '..' component"),
        (lambda t: member(t, "a/../../escape.txt"), "has a '..' component"),
        (lambda t: member(t, "/tmp/evil-from-tar.txt"), "has an absolute path"),
        (lambda t: member(t, "a\\..\\x"), "a backslash"),
        (lambda t: member(t, "evil\n"), "a control character"),
        (lambda t: member(t, "link", type=tarfile.SYMTYPE, linkname="/etc/passwd"), "is a symbolic link"),
        (lambda t: member(t, "hard", type=tarfile.LNKTYPE, linkname="../../outside"), "is a hard link"),
        # Links that stay inside the directory pass Python's data filter; the gateway refuses them too.
        (lambda t: member(t, "inner", type=tarfile.SYMTYPE, linkname="saved_model.pb"), "is a symbolic link"),
        (lambda t: (member(t, "a"), member(t, "b", type=tarfile.LNKTYPE, linkname="a")), "is a hard link"),
        (lambda t: member(t, "tty", type=tarfile.CHRTYPE), "is a character device"),
        (lambda t: member(t, "disk", type=tarfile.BLKTYPE), "is a block device"),
        (lambda t: member(t, "pipe", type=tarfile.FIFOTYPE), "is a FIFO"),
        (lambda t: (member(t, "twice", b"1"), member(t, "twice", b"2")), "appears twice in the archive"),
        (lambda t: (member(t, "f"), member(t, "f/under")), "the archive made it a file"),
    ],
)
def test_unsafe_members_are_refused_by_the_gateways_own_checks(tmp_path: Path, add, message):
    with pytest.raises(DeployFailed) as err:
        unpack_bytes(tmp_path, tar_bytes(add))
    assert err.value.step == "unpack" and err.value.status_code == 400
    assert message in err.value.message
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/evil-from-tar.txt").exists()


@pytest.mark.parametrize(
    "add",
    [
        lambda t, root: member(t, "../../escape.txt"),
        lambda t, root: member(t, str(root / "escape.txt")),
        lambda t, root: (
            member(t, "link", type=tarfile.SYMTYPE, linkname="../.."),
            member(t, "link/escape.txt"),
        ),
    ],
)
def test_safety_does_not_rest_on_the_interpreters_data_filter(tmp_path: Path, monkeypatch, add):
    """An interpreter whose ``data`` filter lets members through (as its bypasses did before
    CPython 3.11.13): nothing is written outside the directory all the same."""
    passthrough = tarfile.fully_trusted_filter
    monkeypatch.setattr(tarfile, "data_filter", passthrough)
    monkeypatch.setitem(tarfile._NAMED_FILTERS, "data", passthrough)
    (tmp_path / "deep").mkdir()
    archive = tmp_path / "upload.tar"
    archive.write_bytes(tar_bytes(lambda t: add(t, tmp_path)))
    into = tmp_path / "deep" / "work"
    into.mkdir()
    with pytest.raises(DeployFailed):
        unpack(archive, into)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "upload.tar"]
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["work"]


def test_a_tar_bomb_is_refused_once_the_limit_is_crossed(tmp_path: Path):
    """A 61 KB .tar.gz of 60 MiB, cut short in its second half: the refusal names the unpacked
    limit, so the unpacking stopped at the limit, long before it could reach the broken end."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        member(tar, "small.bin", b"\0" * 1024)
        member(tar, "zeros.bin", b"\0" * (60 << 20))
    whole = buf.getvalue()
    assert len(whole) < 70_000
    limits = Limits(unpacked_bytes=8 << 20)
    for body in (whole, whole[: len(whole) // 2]):
        with pytest.raises(DeployFailed) as err:
            unpack_bytes(tmp_path, body, limits)
        assert err.value.status_code == 413
        assert err.value.message == (
            f"deploy failed at step 'unpack': the archive unpacks to more than {8 << 20} bytes "
            "(GATEWAY_ARTIFACT_MAX_UNPACKED_BYTES)"
        )
        shutil.rmtree(tmp_path / "work")


def test_bytes_are_counted_as_written_whatever_the_headers_say(tmp_path: Path):
    """Many members, each under the limit, together over it."""
    body = tar_bytes(lambda t: [member(t, f"part-{i}", b"y" * 4096) for i in range(10)])
    with pytest.raises(DeployFailed, match="unpacks to more than 20000 bytes") as err:
        unpack_bytes(tmp_path, body, Limits(unpacked_bytes=20_000))
    assert err.value.status_code == 413
    assert sum(p.stat().st_size for p in (tmp_path / "work").iterdir()) <= 20_000


def test_member_count_is_limited(tmp_path: Path):
    body = tar_bytes(lambda t: [member(t, f"f{i}", b"") for i in range(51)])
    with pytest.raises(DeployFailed) as err:
        unpack_bytes(tmp_path, body, Limits(members=50))
    assert (err.value.status_code, err.value.message) == (
        413,
        "deploy failed at step 'unpack': the archive has more than 50 members (GATEWAY_ARTIFACT_MAX_MEMBERS)",
    )
    assert len(list((tmp_path / "work").iterdir())) == 50
    shutil.rmtree(tmp_path / "work")
    assert len(list(unpack_bytes(tmp_path, body, Limits(members=51)).iterdir())) == 51


def test_path_length_is_limited(tmp_path: Path):
    name = "/".join(["d" * 60] * 5)  # 304 bytes
    with pytest.raises(DeployFailed) as err:
        unpack_bytes(tmp_path, tar_bytes(lambda t: member(t, name)), Limits(path_length=300))
    assert err.value.status_code == 400
    assert "has a path of 304 bytes, over the limit of 300 (GATEWAY_ARTIFACT_MAX_PATH_LENGTH)" in err.value.message
    unpack_bytes(tmp_path, tar_bytes(lambda t: member(t, name)), Limits(path_length=304))
    assert (tmp_path / "work" / name).is_file()


def test_a_clean_archive_unpacks_with_its_directories_and_dot_prefixes(tmp_path: Path):
    def add(t: tarfile.TarFile) -> None:
        member(t, "./", type=tarfile.DIRTYPE)
        member(t, "./variables", type=tarfile.DIRTYPE)
        member(t, "./saved_model.pb", b"pb")
        member(t, "./variables/variables.index", b"ix")

    root = unpack_bytes(tmp_path, tar_bytes(add))
    assert root == tmp_path / "work"
    assert (root / "saved_model.pb").read_bytes() == b"pb"
    assert (root / "variables" / "variables.index").read_bytes() == b"ix"


def test_the_admin_api_refuses_a_traversal_upload_with_400(client, fake_store):
    body = tar_bytes(lambda t: member(t, "../../../outside.txt"))
    r = client.post("/admin/models/toy/deploy", content=body, headers=ADMIN)
    assert r.status_code == 400
    assert r.json()["error"] == (
        "deploy failed at step 'unpack': archive member '../../../outside.txt' has a '..' component; "
        "members must stay inside the version directory"
    )
    assert not (fake_store.parent.parent / "outside.txt").exists()
    history = client.get("/admin/history?model=toy&limit=1", headers=ADMIN).json()["history"][0]
    assert (history["action"], history["outcome"], history["detail"]["step"]) == ("deploy", "failed", "unpack")


def test_the_admin_api_refuses_a_tar_bomb_and_leaves_no_trace_in_the_store(settings, fake_backends, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        member(tar, "zeros.bin", b"\0" * (16 << 20))
    store = settings.model_store
    settings = settings.model_copy(update={"artifact_max_unpacked_bytes": 1 << 20})
    with TestClient(create_app(settings, backends=fake_backends)) as client:
        before = {str(p.relative_to(store)) for p in store.rglob("*")}
        r = client.post("/admin/models/toy/deploy", content=buf.getvalue(), headers=ADMIN)
        after = {str(p.relative_to(store)) for p in store.rglob("*")}
    assert r.status_code == 413
    assert "GATEWAY_ARTIFACT_MAX_UNPACKED_BYTES" in r.json()["error"]
    assert after - before == {".staging"}  # the staging root stays, empty


def test_archives_unpack_in_the_staging_directory_before_the_models_lock(client, settings, tmp_path, monkeypatch):
    """Nothing is unpacked inside the model's folder, and another deploy of the model is not held
    up while an archive unpacks."""
    seen: list[tuple[Path, bool]] = []
    real = deploy_module.unpack

    def watched(archive: Path, into: Path, limits: Limits) -> Path:
        lock = client.app.state.deployer._locks.get("toy")
        seen.append((into, lock is not None and lock.locked()))
        return real(archive, into, limits)

    monkeypatch.setattr(deploy_module, "unpack", watched)
    r = client.post("/admin/models/toy/deploy", content=version_tar(tmp_path, "4"), headers=ADMIN)
    assert r.json()["error"].startswith("deploy failed at step 'smoke'")  # past unpack and validate
    [(into, locked)] = seen
    assert into.parent == settings.model_store / ".staging" and into.name.startswith("toy-")
    assert not locked
    assert not into.exists() and list(into.parent.iterdir()) == []
    assert [p.name for p in (settings.model_store / "toy").iterdir() if p.name.startswith(".")] == []


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
