"""Deploys from a URL or a server path: only under an allow-list, never through a trick of the URL."""

from __future__ import annotations

import http.server
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.errors import BadRequest, Forbidden
from gateway.rollouts.sources import check_path, check_url, redact
from tests.conftest import VEC4
from tests.fakes import make_version

ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}
PREFIXES = ["https://models.example.com/releases/", "http://127.0.0.1:9000/store"]


@pytest.mark.parametrize(
    "url",
    [
        "https://models.example.com/releases/mlp/4.tar.gz",
        "https://MODELS.example.com:443/releases/mlp.tar?X-Amz-Signature=abc",
        "http://127.0.0.1:9000/store/mlp.tar",
        "http://127.0.0.1:9000/store",
    ],
)
def test_urls_under_a_prefix_are_allowed(url):
    assert check_url(url, PREFIXES) == url


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("https://evil.example.com/releases/mlp.tar", Forbidden),  # another host
        ("http://models.example.com/releases/mlp.tar", Forbidden),  # another scheme
        ("https://models.example.com:8443/releases/mlp.tar", Forbidden),  # another port
        ("https://models.example.com/other/mlp.tar", Forbidden),  # another path
        ("http://127.0.0.1:9000/store-evil/mlp.tar", Forbidden),  # a prefix ends at a segment
        ("https://models.example.com/releases/../private/key.tar", BadRequest),
        ("https://models.example.com/releases/%2e%2e/private/key.tar", BadRequest),
        ("https://models.example.com/releases/..%5cprivate", BadRequest),
        ("https://models.example.com@evil.example.com/releases/mlp.tar", BadRequest),  # user info
        ("https://user:secret@models.example.com/releases/mlp.tar", BadRequest),
        ("ftp://models.example.com/releases/mlp.tar", BadRequest),
        ("https:///releases/mlp.tar", BadRequest),
        ("https://models.example.com:99999/releases/mlp.tar", BadRequest),
    ],
)
def test_urls_outside_the_allow_list_or_with_tricks_are_refused(url, error):
    with pytest.raises(error) as refused:
        check_url(url, PREFIXES)
    assert "secret" not in refused.value.message


def test_no_prefixes_means_urls_are_off():
    with pytest.raises(Forbidden, match="GATEWAY_ARTIFACT_URL_PREFIXES"):
        check_url("https://models.example.com/releases/mlp.tar", [])


def test_redact_drops_credentials_and_signed_queries():
    assert redact("https://u:p@h.example.com:8443/a/b.tar?sig=s3cr3t#f") == "https://h.example.com:8443/a/b.tar"


def test_server_paths_are_confined_to_allowed_directories(tmp_path: Path):
    allowed = tmp_path / "artifacts"
    (allowed / "mlp" / "4").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (allowed / "escape").symlink_to(tmp_path / "secret")
    dirs = [str(allowed)]
    assert check_path(f"file://{allowed}/mlp/4", dirs) == (allowed / "mlp" / "4").resolve()
    with pytest.raises(Forbidden, match="not inside an allowed directory"):
        check_path(f"file://{allowed}/escape", dirs)  # a symlink out of the directory
    with pytest.raises(Forbidden):
        check_path(f"file://{tmp_path}/secret", dirs)
    with pytest.raises(BadRequest):
        check_path(f"file://{allowed}/../secret", dirs)
    with pytest.raises(BadRequest):
        check_path(f"file://otherhost{allowed}/mlp/4", dirs)
    with pytest.raises(BadRequest, match="absolute"):
        check_path("file:mlp/4", dirs)
    with pytest.raises(Forbidden, match="GATEWAY_ARTIFACT_DIRS"):
        check_path(f"file://{allowed}/mlp/4", [])


# Through the admin API, against a real HTTP server serving a version directory as a tar.


def _version_dir(root: Path) -> Path:
    """A TF Serving version the fake backend answers as ``x * 1``, with its smoke sample."""
    path = make_version(root, "fetched", 1, "tfserving", VEC4)
    (path / "sample_input.json").write_text(json.dumps({"instances": [[1.0, 2.0, 3.0, 4.0]]}))
    (path / "sample_output.json").write_text(json.dumps({"predictions": [[1.0, 2.0, 3.0, 4.0]]}))
    return path


def _tar_of(path: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for item in sorted(path.iterdir()):
            tar.add(item, arcname=item.name)
    return buf.getvalue()


@pytest.fixture
def artifact_server(tmp_path: Path) -> Iterator[str]:
    """``/releases/good.tar.gz``, a redirect to it, and a 404; the base URL."""
    body = _tar_of(_version_dir(tmp_path / "src"))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/releases/good.tar.gz"):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path == "/releases/moved":
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.end_headers()
            else:
                self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def fetch_client(settings, fake_backends, artifact_server, tmp_path: Path):
    allowed = tmp_path / "artifacts"
    allowed.mkdir()
    settings = settings.model_copy(
        update={"artifact_url_prefixes": f"{artifact_server}/releases/", "artifact_dirs": str(allowed)}
    )
    with TestClient(create_app(settings, backends=fake_backends)) as client:
        yield client


def _last_deploy(client: TestClient) -> dict:
    return client.get("/admin/history?model=fetched&limit=1", headers=ADMIN).json()["history"][0]


def test_deploy_from_an_allow_listed_url_serves_the_version(fetch_client, artifact_server, fake_store):
    url = f"{artifact_server}/releases/good.tar.gz?signature=s3cr3t-token"
    r = fetch_client.post("/admin/models/fetched/deploy", params={"source": url}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json() == {"model": "fetched", "version": 1, "backend": "tfserving", "status": "deployed", "canary": None}
    assert (fake_store / "fetched" / "1" / "sample_input.json").is_file()
    answer = fetch_client.post("/v1/models/fetched:predict", json={"instances": [[2.0, 2.0, 2.0, 2.0]]})
    assert answer.json() == {"predictions": [[2.0, 2.0, 2.0, 2.0]]}
    entry = _last_deploy(fetch_client)
    assert entry["detail"]["source"] == f"{artifact_server}/releases/good.tar.gz"
    assert "s3cr3t" not in json.dumps(entry)


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/elsewhere/good.tar.gz", 403, "is not under an allow-listed prefix"),
        ("/releases/../elsewhere/good.tar.gz", 400, "must not contain '.' or '..' segments"),
        ("/releases/moved", 400, "answered a redirect (302); give the final URL"),
        ("/releases/missing.tar.gz", 502, "answered HTTP 404"),
    ],
)
def test_refused_or_failed_fetches_say_why_and_route_nothing(fetch_client, artifact_server, path, status, message):
    r = fetch_client.post("/admin/models/fetched/deploy", params={"source": artifact_server + path}, headers=ADMIN)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert fetch_client.post("/v1/models/fetched:predict", json={"instances": [[1, 2, 3, 4]]}).status_code == 404
    entry = _last_deploy(fetch_client)
    assert (entry["outcome"], entry["detail"]["step"]) == ("failed", "fetch")


def test_deploy_from_an_allowed_directory_and_not_through_a_symlink(fetch_client, tmp_path: Path):
    allowed = tmp_path / "artifacts"
    version = _version_dir(allowed)
    outside = _version_dir(tmp_path / "outside")
    (allowed / "link").symlink_to(outside)
    r = fetch_client.post("/admin/models/fetched/deploy", params={"source": f"file://{allowed}/link"}, headers=ADMIN)
    assert r.status_code == 403, r.text
    r = fetch_client.post("/admin/models/fetched/deploy", params={"source": f"file://{version}"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "deployed"


def test_a_body_and_a_source_together_are_refused(fetch_client, artifact_server):
    r = fetch_client.post(
        "/admin/models/fetched/deploy",
        params={"source": f"{artifact_server}/releases/good.tar.gz"},
        content=b"not empty",
        headers=ADMIN,
    )
    assert r.status_code == 400
    assert "either as the request body or as source" in r.json()["error"]
