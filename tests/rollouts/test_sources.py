"""Deploys from a URL or a server path: only under an allow-list, never through a trick of the URL."""

from __future__ import annotations

import http.server
import io
import json
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.core.errors import BadRequest, DeployFailed, Forbidden
from gateway.rollouts.sources import check_path, check_url, pack_path, redact
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
        ("https://models.example.com/releases/%252e%252e/private/key.tar", BadRequest),  # double-encoded
        ("https://models.example.com/releases/%252E%252E%252Fkey.tar", BadRequest),
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
        update={"artifact_url_prefixes": [f"{artifact_server}/releases/"], "artifact_dirs": [str(allowed)]}
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


def test_deploying_the_same_files_again_answers_unchanged_without_a_canary(fetch_client, tmp_path: Path):
    version = _version_dir(tmp_path / "artifacts")
    params = {"source": f"file://{version}"}
    first = fetch_client.post("/admin/models/fetched/deploy", params=params, headers=ADMIN)
    assert first.json() == {
        "model": "fetched",
        "version": 1,
        "backend": "tfserving",
        "status": "deployed",
        "canary": None,
    }
    again = fetch_client.post("/admin/models/fetched/deploy", params={**params, "version": 1}, headers=ADMIN)
    assert again.status_code == 200, again.text
    assert again.content == b'{"model":"fetched","version":1,"backend":"tfserving","status":"unchanged"}'


def test_a_body_and_a_source_together_are_refused(fetch_client, artifact_server):
    r = fetch_client.post(
        "/admin/models/fetched/deploy",
        params={"source": f"{artifact_server}/releases/good.tar.gz"},
        content=b"not empty",
        headers=ADMIN,
    )
    assert r.status_code == 400
    assert "either as the request body or as source" in r.json()["error"]


@pytest.mark.parametrize("swapped", ["mlp", "mlp/4", "mlp/4/model.tar"])
def test_a_path_swapped_for_a_symlink_after_the_check_is_not_followed(tmp_path: Path, swapped):
    """Between the check and the copy, a directory (or the file itself) becomes a link out of
    the allowed directory: the copy fails instead of reading what the link points at."""
    allowed, outside = tmp_path / "artifacts", tmp_path / "outside"
    for root in (allowed, outside):
        (root / "mlp" / "4").mkdir(parents=True)
        (root / "mlp" / "4" / "model.tar").write_bytes(_tar_of(_version_dir(root / "src")))
        (root / "mlp" / "4" / "secret.txt").write_text(f"from {root.name}")
    name = "mlp/4/model.tar" if swapped.endswith(".tar") else "mlp/4"
    checked = check_path(f"file://{allowed}/{name}", [str(allowed)])
    (allowed / swapped).rename(allowed / f"{swapped}.moved")
    (allowed / swapped).symlink_to(outside / swapped)
    into = tmp_path / "upload.tar"
    with pytest.raises(Forbidden, match="changed after it was checked"):
        pack_path(checked, into, 1 << 30)
    assert not into.exists() or b"from outside" not in into.read_bytes()


def test_a_symlink_inside_a_source_directory_is_refused(tmp_path: Path):
    version = _version_dir(tmp_path / "artifacts")
    (version / "extra").symlink_to(tmp_path)
    with pytest.raises(DeployFailed, match="extra in the source directory is a symbolic link"):
        pack_path(version, tmp_path / "upload.tar", 1 << 30)


def test_a_source_directory_is_copied_with_its_files_and_subdirectories(tmp_path: Path):
    version = _version_dir(tmp_path / "artifacts")
    (version / "variables").mkdir()
    (version / "variables" / "variables.index").write_bytes(b"ix")
    pack_path(version, tmp_path / "upload.tar", 1 << 30)
    with tarfile.open(tmp_path / "upload.tar") as tar:
        assert sorted(tar.getnames()) == sorted(
            ["saved_model.pb", "signature.json", "sample_input.json", "sample_output.json", "variables",
             "variables/variables.index"]
        )  # fmt: skip
        assert tar.extractfile("variables/variables.index").read() == b"ix"


# Where a URL's host name leads: resolved once, checked, and connected to as checked.


class Recorder(http.server.BaseHTTPRequestHandler):
    """Serves ``body`` for any GET and counts the requests it received."""

    body = b""
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.headers["Host"])
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(address: tuple[str, int], body: bytes) -> tuple[http.server.ThreadingHTTPServer, list[str]]:
    hits: list[str] = []
    handler = type("Handler", (Recorder,), {"body": body, "hits": hits})
    server = http.server.ThreadingHTTPServer(address, handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, hits


@pytest.fixture
def dns(monkeypatch):
    """Answers for the name ``artifacts.test``: the next address of ``dns.answers`` on each lookup
    (the last one repeats); other names resolve as usual. ``dns.lookups`` counts the lookups."""
    real = socket.getaddrinfo

    class Fake:
        answers: list[str] = ["127.0.0.1"]
        lookups = 0

        def __call__(self, host, port, *args, **kwargs):
            if host != "artifacts.test":
                return real(host, port, *args, **kwargs)
            Fake.lookups += 1
            address = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 80)))]

    fake = Fake()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


def _client(settings, fake_backends, **update) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=update), backends=fake_backends))


def test_a_host_name_that_resolves_to_a_private_address_is_refused(settings, fake_backends, tmp_path, dns):
    server, hits = _serve(("127.0.0.1", 0), _tar_of(_version_dir(tmp_path / "src")))
    port = server.server_address[1]
    url = f"http://artifacts.test:{port}/releases/good.tar.gz"
    try:
        prefixes = [f"http://artifacts.test:{port}/releases/"]
        with _client(settings, fake_backends, artifact_url_prefixes=prefixes) as client:
            r = client.post("/admin/models/fetched/deploy", params={"source": url}, headers=ADMIN)
            assert r.status_code == 403, r.text
            assert r.json()["error"] == (
                "deploy failed at step 'fetch': source host artifacts.test resolves to 127.0.0.1, a loopback, "
                "link-local or private address; an operator may allow its network with "
                "GATEWAY_ARTIFACT_URL_ALLOWED_NETWORKS"
            )
            assert hits == []
        dns.answers = ["169.254.169.254"]  # cloud metadata: refused before any connection
        with _client(settings, fake_backends, artifact_url_prefixes=prefixes) as client:
            r = client.post("/admin/models/fetched/deploy", params={"source": url}, headers=ADMIN)
            assert r.status_code == 403 and "169.254.169.254" in r.json()["error"]
        dns.answers = ["127.0.0.1"]
        allowed = {"artifact_url_prefixes": prefixes, "artifact_url_allowed_networks": ["127.0.0.0/8"]}
        with _client(settings, fake_backends, **allowed) as client:
            r = client.post("/admin/models/fetched/deploy", params={"source": url}, headers=ADMIN)
            assert r.status_code == 200, r.text
            assert hits == [f"artifacts.test:{port}"]  # the Host header names the URL's host
    finally:
        server.shutdown()
        server.server_close()


def test_the_connection_goes_to_the_address_that_was_checked(settings, fake_backends, tmp_path, dns):
    """DNS rebinding: the name answers an allowed address first and an internal one afterwards."""
    good, good_hits = _serve(("127.0.0.1", 0), _tar_of(_version_dir(tmp_path / "src")))
    port = good.server_address[1]
    internal, internal_hits = _serve(("127.0.0.2", port), b"internal secrets")
    dns.answers = ["127.0.0.1", "127.0.0.2"]
    try:
        update = {
            "artifact_url_prefixes": [f"http://artifacts.test:{port}/releases/"],
            "artifact_url_allowed_networks": ["127.0.0.1/32"],
        }
        with _client(settings, fake_backends, **update) as client:
            source = f"http://artifacts.test:{port}/releases/good.tar.gz"
            r = client.post("/admin/models/fetched/deploy", params={"source": source}, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert (len(good_hits), internal_hits, dns.lookups) == (1, [], 1)
    finally:
        for server in (good, internal):
            server.shutdown()
            server.server_close()


# Deadlines, and the model's lock only after the download.


@pytest.fixture
def gated_server(tmp_path: Path) -> Iterator[tuple[str, threading.Event, threading.Event]]:
    """``/releases/gated.tar.gz``: headers and 16 bytes, then nothing until ``release`` is set.
    Yields the URL, ``requested`` (set when a download began) and ``release``."""
    version = _version_dir(tmp_path / "gated-src")
    # Served as the model's second version: the fake backend multiplies by the version number.
    (version / "sample_output.json").write_text(json.dumps({"predictions": [[2.0, 4.0, 6.0, 8.0]]}))
    body = _tar_of(version)
    requested, release = threading.Event(), threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:16])
            self.wfile.flush()
            requested.set()
            if release.wait(300):
                self.wfile.write(body[16:])

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/releases/gated.tar.gz", requested, release
    release.set()
    server.shutdown()
    server.server_close()


def test_a_stalled_download_fails_at_the_idle_timeout(settings, fake_backends, gated_server):
    url, requested, _ = gated_server
    update = {
        "artifact_url_prefixes": [url.rsplit("/", 1)[0] + "/"],
        "artifact_fetch_idle_seconds": 0.5,
        "artifact_fetch_timeout_seconds": 60.0,
    }
    with _client(settings, fake_backends, **update) as client:
        r = client.post("/admin/models/fetched/deploy", params={"source": url}, headers=ADMIN)
    assert requested.is_set()
    assert r.status_code == 504, r.text
    # A 5xx answer names no address (the log line has it, with the request ID).
    assert r.json()["error"] == (
        "deploy failed at step 'fetch': cannot download <address>: no data for 0.5s (GATEWAY_ARTIFACT_FETCH_IDLE_SECONDS)"
    )


def test_a_download_does_not_hold_the_models_lock(settings, fake_backends, gated_server, tmp_path):
    """While one deploy of a model waits for its download, another deploy of it (an upload) runs
    to the end."""
    url, requested, release = gated_server
    update = {
        "artifact_url_prefixes": [url.rsplit("/", 1)[0] + "/"],
        "artifact_fetch_idle_seconds": 300.0,
        "artifact_fetch_timeout_seconds": 30.0,  # bounds the run of this test without the fix
    }
    with _client(settings, fake_backends, **update) as client:
        answers: list = []
        slow = threading.Thread(
            target=lambda: answers.append(
                client.post("/admin/models/fetched/deploy", params={"source": url}, headers=ADMIN)
            )
        )
        slow.start()
        assert requested.wait(60)
        upload = _tar_of(_version_dir(tmp_path / "upload-src"))
        r = client.post("/admin/models/fetched/deploy", content=upload, headers=ADMIN)
        still_downloading = slow.is_alive()
        release.set()
        slow.join(60)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1
    assert still_downloading
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["version"] == 2
