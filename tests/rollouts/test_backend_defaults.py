"""Backends' own default versions follow the stable label, best effort; and a deploy that fails at
the ready step unloads what it asked for and leaves routing as it was."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.core.errors import BackendError
from gateway.core.types import VersionStatus

ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}


def test_stable_moves_make_the_backend_default_follow(client, fake_backends):
    ts, tf = fake_backends["torchserve"], fake_backends["tfserving"]
    assert ("toy", 1) in ts.defaults  # adopted as stable
    ts.defaults.clear()
    assert client.post("/admin/models/toy/promote", json={}, headers=ADMIN).status_code == 200
    assert ts.defaults == [("toy", 3)]
    assert client.post("/admin/models/toy/rollback", headers=ADMIN).status_code == 200
    assert ts.defaults == [("toy", 3), ("toy", 1)]
    r = client.put("/admin/models/toy/traffic", json={"canary": 3, "percent": 20}, headers=ADMIN)
    assert r.status_code == 200 and ts.defaults == [("toy", 3), ("toy", 1)]  # stable did not move
    tf.defaults.clear()
    assert client.put("/admin/models/toy/labels/stable", json={"version": 2}, headers=ADMIN).status_code == 200
    assert tf.defaults == [("toy", 2)] and ts.defaults == [("toy", 3), ("toy", 1)]


def test_retire_first_makes_stable_the_default(client, fake_backends):
    ts = fake_backends["torchserve"]
    for version in (3, 2, 3):  # stable history 1, 3, 2: version 1 is free to retire
        assert client.post("/admin/models/toy/promote", json={"version": version}, headers=ADMIN).status_code == 200
    ts.defaults.clear()
    r = client.post("/admin/models/toy/versions/1/retire", headers=ADMIN)
    assert r.json() == {"model": "toy", "version": 1, "retired": True, "unloaded": True}
    assert ts.defaults == [("toy", 3)] and ("toy", 1) in ts.unloaded


def test_a_backend_refusing_set_default_never_fails_the_routing_change(client, fake_backends, caplog):
    async def refuse(model: str, version: int) -> None:
        raise BackendError("torchserve set-default toy v3: Model version 3 does not exist for model toy (HTTP 404)")

    fake_backends["torchserve"].set_default = refuse
    with caplog.at_level(logging.WARNING):
        r = client.post("/admin/models/toy/promote", json={}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["stable"] == 3
    assert client.post("/v1/models/toy:predict", json={"instances": [[1, 2, 3, 4]]}).headers["X-Model-Version"] == "3"
    assert "could not make toy v3 torchserve's default" in caplog.text


def tf_version_tar(tmp_path: Path) -> bytes:
    directory = tmp_path / "upload"
    directory.mkdir()
    (directory / "saved_model.pb").write_bytes(b"")
    sig = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
           "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]}  # fmt: skip
    (directory / "signature.json").write_text(json.dumps(sig))
    (directory / "sample_input.json").write_text('{"instances": [[1, 2, 3, 4]]}')
    (directory / "sample_output.json").write_text('{"predictions": [[4, 8, 12, 16]]}')
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(directory, arcname="v")
    return buf.getvalue()


def test_a_deploy_still_loading_at_its_deadline_fails_with_the_last_error(settings, fake_backends, tmp_path):
    tf = fake_backends["tfserving"]
    error = "Failed to load servable toy version 4: retrying (attempt 2 of 5)"
    tf.statuses = [VersionStatus(4, "LOADING"), VersionStatus(4, "LOADING", error), VersionStatus(4, "LOADING")]
    fast = settings.model_copy(update={"deploy_ready_timeout_seconds": 1.0, "backend_probe_seconds": 3600})
    with TestClient(create_app(fast, fake_backends)) as client:
        before = client.get("/admin/models/toy", headers=ADMIN).json()["models"][0]
        r = client.post("/admin/models/toy/deploy?version=4", content=tf_version_tar(tmp_path), headers=ADMIN)
        assert (r.status_code, r.json()["error"]) == (
            504,
            f"deploy failed at step 'ready': tfserving did not report version 4 ready within 1s "
            f"(state LOADING; last error: {error})",
        )
        after = client.get("/admin/models/toy", headers=ADMIN).json()["models"][0]
        assert (after["labels"], after["versions"]) == (before["labels"], before["versions"])
        assert ("toy", 4) in tf.unloaded
        assert not (settings.model_store / "toy" / "4").exists()
        assert client.post("/v1/models/toy/versions/4:predict", json={"instances": [[1, 2, 3, 4]]}).status_code == 404
