"""deploy/docker/stack_init.py: seeding, links, TF Serving's model config, and TorchServe
registration (against a stand-in management API on loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT
from tests.fakes import make_version

SCRIPT = ROOT / "deploy" / "docker" / "stack_init.py"


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    source = tmp_path / "seed"
    make_version(source, "mlp", 1, "torchserve", {})
    make_version(source, "mlp", 2, "tfserving", {})
    make_version(source, "cnn", 1, "torchserve", {})
    return source


def test_prepare_seeds_an_empty_store_links_archives_and_writes_the_tf_config(tmp_path, seed):
    store = tmp_path / "store"
    config = store / ".tfserving" / "models.config"
    done = run_script(
        "prepare", f"--store={store}", f"--seed-from={seed}", f"--tf-config={config}", "--tf-base-path=/models"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["versions"] == ["cnn/1 (torchserve)", "mlp/1 (torchserve)", "mlp/2 (tfserving)"]
    assert os.readlink(store / "mlp.1.mar") == "mlp/1/mlp.mar" and os.readlink(store / "cnn.1.mar") == "cnn/1/cnn.mar"
    assert not (store / "mlp.2.mar").exists()
    text = config.read_text()
    assert 'name: "mlp"' in text and 'base_path: "/models/mlp"' in text and "versions: 2" in text
    assert 'name: "cnn"' not in text  # no SavedModel version
    assert not list(store.rglob("*.seeding")) and not list(store.glob(".*.tmp"))


def test_prepare_never_seeds_over_existing_versions(tmp_path, seed):
    store = tmp_path / "store"
    make_version(store, "other", 4, "tfserving", {})
    done = run_script("prepare", f"--store={store}", f"--seed-from={seed}")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in store.iterdir()) == ["other"]


def test_prepare_on_a_read_only_store_writes_only_the_config(tmp_path, seed):
    store = tmp_path / "store"
    run_script("prepare", f"--store={store}", f"--seed-from={seed}", "--no-links")
    store.chmod(0o555)
    try:
        config = tmp_path / "runtime" / "models.config"
        done = run_script("prepare", f"--store={store}", "--no-links", f"--tf-config={config}")
        assert done.returncode == 0, done.stderr
        assert "versions: 2" in config.read_text()
    finally:
        store.chmod(0o755)


class FakeTorchServe(BaseHTTPRequestHandler):
    """/ping, and POST /models that accepts archives by the file name at the top of the store."""

    store: Path
    calls: list[dict[str, str]]

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer(200 if self.path == "/ping" else 404, {"status": "Healthy"})

    def do_POST(self) -> None:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        self.calls.append(query)
        archive = self.store / query["url"]
        if "/" in query["url"] or not archive.is_file():
            self._answer(404, {"message": f"Model not found in model store: {query['url']}"})
        elif query["url"] == "cnn.1.mar":
            self._answer(409, {"message": "Model version 1 is already registered for model cnn"})
        else:
            self._answer(200, {"status": "registered"})


@pytest.fixture
def fake_torchserve(tmp_path: Path, seed: Path):
    store = tmp_path / "store"
    run_script("prepare", f"--store={store}", f"--seed-from={seed}", "--no-links")
    handler = type("Handler", (FakeTorchServe,), {"store": store, "calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield store, f"http://127.0.0.1:{server.server_address[1]}", handler.calls
    server.shutdown()
    server.server_close()


def test_register_links_and_registers_every_torchserve_version(fake_torchserve, tmp_path):
    store, url, calls = fake_torchserve
    done_file = tmp_path / "registered"
    done = run_script(
        "register", f"--store={store}", f"--inference-url={url}", f"--management-url={url}",
        f"--done-file={done_file}", "--workers=2", "--wait=10", "--strict",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [(c["url"], c["model_name"], c["initial_workers"], c["synchronous"]) for c in calls] == [
        ("cnn.1.mar", "cnn", "2", "true"),
        ("mlp.1.mar", "mlp", "2", "true"),
    ]
    assert json.loads(done_file.read_text()) == {"failed": []}


def test_a_failing_version_is_reported_and_the_others_still_register(fake_torchserve, tmp_path):
    store, url, calls = fake_torchserve
    make_version(store, "broken", 1, "torchserve", {})
    (store / "broken" / "1" / "broken.mar").unlink()
    (store / "broken" / "1" / "x.mar").mkdir()  # a directory named .mar: the stand-in answers 404
    done_file = tmp_path / "registered"
    done = run_script("register", f"--store={store}", f"--inference-url={url}", f"--management-url={url}",
                      f"--done-file={done_file}", "--wait=10")  # fmt: skip
    assert done.returncode == 0, done.stderr  # not --strict: TorchServe starts with what works
    assert json.loads(done_file.read_text()) == {"failed": ["broken v1"]}
    assert "registering broken v1 answered 404" in done.stderr
    assert [c["model_name"] for c in calls] == ["broken", "cnn", "mlp"]


def test_torchserve_mode_registers_in_the_background_and_execs_the_command(fake_torchserve, tmp_path):
    store, url, calls = fake_torchserve
    done_file = tmp_path / "registered"
    marker = tmp_path / "exec-ran"
    done = run_script(
        "torchserve", f"--store={store}", f"--inference-url={url}", f"--management-url={url}",
        f"--done-file={done_file}", "--wait=10", "--",
        sys.executable, "-c", f"import pathlib, time; pathlib.Path({str(marker)!r}).write_text('ran'); time.sleep(0.1)",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "ran"
    for _ in range(100):
        if done_file.exists():
            break
        threading.Event().wait(0.05)
    assert json.loads(done_file.read_text()) == {"failed": []}
    assert len(calls) == 2


def test_prepare_writes_start_up_files_once_and_never_over_the_gateways(tmp_path, seed):
    """The gateway rewrites both files on every change; a later `compose up` (model-init runs
    again) must not put back versions the gateway retired."""
    store = tmp_path / "store"
    tf_config, ts_startup = store / ".tfserving" / "models.config", store / ".torchserve" / "models.json"
    args = ("prepare", f"--store={store}", f"--seed-from={seed}", f"--tf-config={tf_config}",
            f"--ts-startup={ts_startup}")  # fmt: skip
    assert run_script(*args).returncode == 0
    assert json.loads(ts_startup.read_text()) == {
        "models": {"cnn": {"default": "1", "versions": ["1"]}, "mlp": {"default": "1", "versions": ["1"]}}
    }
    tf_config.write_text("model_config_list {\n}\n")  # what the gateway writes after retiring mlp v2
    ts_startup.write_text('{"models": {}}\n')
    done = run_script(*args)
    assert done.returncode == 0 and "not rewritten" in done.stderr
    assert tf_config.read_text() == "model_config_list {\n}\n" and ts_startup.read_text() == '{"models": {}}\n'
    assert run_script(*args, "--rewrite").returncode == 0
    assert "versions: 2" in tf_config.read_text() and '"mlp"' in ts_startup.read_text()


def test_register_follows_the_start_up_file_default_first(fake_torchserve, tmp_path):
    """Only what the registry has available is registered, retired versions never, and the
    stable version first: TorchServe makes the first version registered the default."""
    store, url, calls = fake_torchserve
    make_version(store, "mlp", 3, "torchserve", {})
    make_version(store, "mlp", 4, "torchserve", {})  # retired: still on disk, not in the file
    startup = store / ".torchserve" / "models.json"
    startup.parent.mkdir()
    startup.write_text(json.dumps({"models": {"mlp": {"default": "3", "versions": ["1", "3"]}}}))
    done = run_script("register", f"--store={store}", f"--inference-url={url}", f"--management-url={url}",
                      "--wait=10", "--strict")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [(c["model_name"], c["url"]) for c in calls] == [("mlp", "mlp.3.mar"), ("mlp", "mlp.1.mar")]
