"""One name rule (gateway.core.names) at every entry point: a model name, label or version that breaks
it is a 400 that says so, and never reaches a backend, the registry, the store, a header or a log.

The classic hole: ``re.match`` with a pattern ending in ``$`` accepts ``'evil\\n'``, since ``$``
also matches just before a final newline.
"""

from __future__ import annotations

import io
import logging
import tarfile
from urllib.parse import quote

import pytest

from gateway.cli import build_parser
from gateway.core import names

ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}
READER = {"Authorization": "Bearer unit-read-token-0123456789"}
ROW = {"instances": [[1.0, 2.0, 3.0, 4.0]]}
V2 = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}]}

#: Names that break the rule, each a way a lax check lets one through.
BAD_MODELS = {
    "final newline": "toy\n",
    "carriage return": "toy\r",
    "escape character": "to\x1by",
    "tab": "to\ty",
    "non-ASCII letter": "t\u00f6y",
    "over 128 characters": "t" * 129,
}
BAD_LABELS = {"final newline": "canary\n", "control character": "can\x07ary", "non-ASCII": "c\u00e4nary"}
BAD_VERSIONS = {
    "final newline": "1\n",
    "Arabic-Indic digit": "\u0661",
    "fullwidth digit": "\uff11",
    "over 64 bits": "9" * 20,
}


def segment(text: str) -> str:
    return quote(text, safe="")


def test_the_rule_is_a_full_match():
    for bad in BAD_MODELS.values():
        assert not names.is_model_name(bad)
        with pytest.raises(names.InvalidName, match="invalid model name"):
            names.model_name(bad)
    for bad in BAD_LABELS.values():
        assert not names.is_label_name(bad)
    for bad in BAD_VERSIONS.values():
        with pytest.raises(names.InvalidName, match=r"positive integer.*ASCII digits"):
            names.parse_version(bad)
        assert names.canonical_version(bad) is None
    assert names.model_name("m" * 128) == "m" * 128
    assert names.parse_version("007") == 7 and names.canonical_version("007") is None
    assert names.shown("evil\n") == "'evil\\n'"


def _no_trace(caplog, fake_backends, response, bad: str) -> None:
    """The name reached no backend, no routing header and no log line."""
    assert not any(b.requests for b in fake_backends.values())
    assert not any(k.lower().startswith("x-model") or k.lower() == "x-backend" for k in response.headers)
    assert not _logged(caplog, bad)


def _logged(caplog, text: str) -> list[str]:
    """The gateway's log lines (not the test client's) that contain ``text``."""
    return [r.getMessage() for r in caplog.records if r.name.startswith("gateway") and text in r.getMessage()]


INFERENCE_POSTS = [
    ("/v1/models/{m}:predict", ROW),
    ("/v1/models/{m}/versions/1:predict", ROW),
    ("/v1/models/{m}/labels/stable:predict", ROW),
    ("/v2/models/{m}/infer", V2),
    ("/v2/models/{m}/versions/1/infer", V2),
    ("/predictions/{m}", ROW),
    ("/predictions/{m}/1", ROW),
]
INFERENCE_GETS = [
    "/v1/models/{m}",
    "/v1/models/{m}/versions/1",
    "/v1/models/{m}/metadata",
    "/v2/models/{m}",
    "/v2/models/{m}/ready",
    "/v2/models/{m}/versions/1/ready",
]


@pytest.mark.parametrize("bad", BAD_MODELS.values(), ids=BAD_MODELS.keys())
def test_inference_paths_refuse_a_bad_model_name(client, fake_backends, caplog, bad):
    caplog.set_level(logging.DEBUG)
    for path, body in INFERENCE_POSTS:
        r = client.post(path.format(m=segment(bad)), json=body)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"] == f"invalid model name {names.shown(bad)}: {names.MODEL_RULE}"
        _no_trace(caplog, fake_backends, r, bad)
    for path in INFERENCE_GETS:
        r = client.get(path.format(m=segment(bad)))
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"].startswith("invalid model name")


def test_a_valid_unknown_name_is_still_a_404(client):
    r = client.post("/v1/models/ghost:predict", json=ROW)
    assert (r.status_code, r.json()["error"]) == (404, "model 'ghost' not found")


@pytest.mark.parametrize("bad", BAD_LABELS.values(), ids=BAD_LABELS.keys())
def test_inference_refuses_a_bad_label(client, fake_backends, caplog, bad):
    caplog.set_level(logging.DEBUG)
    r = client.post(f"/v1/models/toy/labels/{segment(bad)}:predict", json=ROW)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == f"invalid label name {names.shown(bad)}: {names.LABEL_RULE}"
    _no_trace(caplog, fake_backends, r, bad)


@pytest.mark.parametrize("bad", BAD_VERSIONS.values(), ids=BAD_VERSIONS.keys())
def test_inference_refuses_a_bad_version(client, fake_backends, bad):
    for path in ("/v1/models/toy/versions/{v}:predict", "/v2/models/toy/versions/{v}/infer", "/predictions/toy/{v}"):
        r = client.post(path.format(v=segment(bad)), json=ROW if "v2" not in path else V2)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"] == f"version must be a positive integer, got {names.shown(bad)} ({names.VERSION_RULE})"
    assert not any(b.requests for b in fake_backends.values())


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("saved_model.pb")
        tar.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


def _admin_calls(model: str) -> list[tuple[str, str, dict]]:
    m = segment(model)
    return [
        ("POST", f"/admin/models/{m}/deploy", {"content": _tar()}),
        ("POST", f"/admin/models/{m}/promote", {"json": {}}),
        ("POST", f"/admin/models/{m}/rollback", {}),
        ("PUT", f"/admin/models/{m}/traffic", {"json": {"canary": 2, "percent": 10}}),
        ("PUT", f"/admin/models/{m}/shadow", {"json": {"version": 2, "percent": 10}}),
        ("PUT", f"/admin/models/{m}/labels/beta", {"json": {"version": 1}}),
        ("PUT", f"/admin/models/{m}/min-ready", {"json": {"min_ready": 2}}),
        ("POST", f"/admin/models/{m}/versions/1/retire", {}),
        ("GET", f"/admin/models/{m}", {}),
        ("GET", f"/admin/history?model={m}", {}),
    ]


@pytest.mark.parametrize("bad", BAD_MODELS.values(), ids=BAD_MODELS.keys())
def test_admin_routes_refuse_a_bad_model_name(client, fake_store, caplog, bad):
    caplog.set_level(logging.DEBUG)
    history = client.get("/admin/history", headers=READER).json()["history"]
    before = sorted(p.name for p in fake_store.iterdir())
    for method, path, kwargs in _admin_calls(bad):
        r = client.request(method, path, headers=ADMIN, **kwargs)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"].startswith(f"invalid model name {names.shown(bad)}"), (path, r.text)
    assert client.get("/admin/history", headers=READER).json()["history"] == history
    assert sorted(p.name for p in fake_store.iterdir()) == before  # no model directory, no upload left
    assert not _logged(caplog, bad)


def test_a_state_document_with_bad_names_changes_nothing(client):
    history = client.get("/admin/history", headers=READER).json()["history"]
    documents = {
        "label ending in a newline": 'models:\n  toy:\n    labels:\n      stable: 1\n      "beta\\n": 2\n',
        "version given as a boolean": "models:\n  toy:\n    labels:\n      stable: true\n",
        "model name ending in a newline": 'models:\n  "toy\\n":\n    labels:\n      stable: 1\n',
    }
    for what, document in documents.items():
        r = client.put("/admin/state", content=document, headers=ADMIN)
        assert r.status_code == 400, (what, r.text)
    errors = [client.put("/admin/state", content=d, headers=ADMIN).json()["error"] for d in documents.values()]
    assert "invalid label name 'beta\\n'" in errors[0]
    assert "must be a positive integer" in errors[1]
    assert "'toy\\n' is not a valid model name" in errors[2]
    assert client.get("/admin/history", headers=READER).json()["history"] == history
    assert client.get("/admin/models/toy", headers=READER).json()["models"][0]["labels"] == {"canary": 3, "stable": 1}


@pytest.mark.parametrize(
    "argv",
    [
        ["promote", "evil\n"],
        ["promote", "mlp", "\u0661"],
        ["label", "mlp", "stable\n", "2"],
        ["retire", "mlp", "2\n"],
        ["traffic", "mlp", "--canary", "\uff12", "--percent", "5"],
        ["deploy", "m" * 129, "some/dir"],
        ["status", "../admin"],
    ],
)
def test_the_cli_refuses_bad_names_before_any_call(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid model name" in err or "invalid label name" in err or "must be a positive integer" in err


def test_the_cli_reads_good_names():
    args = build_parser().parse_args(["label", "mlp-2.x", "beta", "07"])
    assert (args.model, args.name, args.version) == ("mlp-2.x", "beta", 7)
