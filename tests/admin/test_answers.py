"""The admin API's answers are typed: the OpenAPI schema names each answer's model and fields,
and the JSON the routes write is what those models say."""

from __future__ import annotations

import pytest

from gateway.app import create_app

ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}

ANSWERS = [
    ("get", "/admin/models", "StatusAnswer"),
    ("get", "/admin/models/{model}", "StatusAnswer"),
    ("get", "/admin/history", "HistoryAnswer"),
    ("post", "/admin/models/{model}/deploy", "DeployAnswer"),
    ("post", "/admin/models/{model}/promote", "StableAnswer"),
    ("post", "/admin/models/{model}/rollback", "StableAnswer"),
    ("put", "/admin/models/{model}/traffic", "TrafficAnswer"),
    ("put", "/admin/models/{model}/shadow", "ShadowAnswer"),
    ("put", "/admin/models/{model}/labels/{label}", "LabelAnswer"),
    ("put", "/admin/models/{model}/min-ready", "MinReadyAnswer"),
    ("post", "/admin/models/{model}/versions/{version}/retire", "RetireAnswer"),
    ("put", "/admin/state", "ApplyAnswer"),
]


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    from tests.conftest import make_fake_backends, make_fake_store, unit_settings

    settings = unit_settings(make_fake_store(tmp_path_factory.mktemp("answers")))
    return create_app(settings, backends=make_fake_backends()).openapi()


@pytest.mark.parametrize(("method", "path", "name"), ANSWERS)
def test_every_admin_answer_names_its_model(schema, method, path, name):
    ok = schema["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": f"#/components/schemas/{name}"}
    assert schema["components"]["schemas"][name]["properties"]


def test_the_schema_documents_the_fields(schema):
    models = schema["components"]["schemas"]
    assert set(models["StableAnswer"]["properties"]) == {"model", "stable", "previous"}
    assert set(models["TrafficAnswer"]["properties"]) == {"model", "canary", "percent", "guard"}
    assert set(models["RetireAnswer"]["required"]) == {"model", "version", "retired", "unloaded"}
    status = models["ModelStatus"]["properties"]
    assert status["versions"]["items"] == {"$ref": "#/components/schemas/VersionStatus"}
    assert status["traffic"] == {"$ref": "#/components/schemas/TrafficView"}
    assert set(models["VersionStatus"]["properties"]) >= {"version", "backend", "state", "backend_state"}
    assert set(models["HistoryEntry"]["required"]) == {
        "id", "at", "model", "action", "actor", "outcome", "message", "detail"
    }  # fmt: skip
    # The traffic body's guard is the registry's guard type.
    body = models["TrafficBody"]["properties"]["guard"]
    assert {"$ref": "#/components/schemas/GuardSpec"} in body["anyOf"]


def test_optional_fields_are_left_out_and_null_ones_kept(client):
    status = client.get("/admin/models/toy", headers=ADMIN).json()["models"][0]
    assert status["traffic"]["sticky_header"] is None  # always there
    assert all("backend_error" not in v for v in status["versions"])  # only when there is one
    r = client.post("/admin/models/toy/rollback", headers=ADMIN)
    assert r.status_code == 409
    r = client.post("/admin/models/toy/promote", json={}, headers=ADMIN)
    assert r.json() == {"model": "toy", "stable": 3, "previous": 1}
    r = client.put("/admin/models/toy/traffic", json={"canary": None}, headers=ADMIN)
    assert r.content == b'{"model":"toy","canary":null,"percent":0.0,"guard":null}'


def test_a_deploy_answer_has_canary_null_when_deployed_and_none_when_unchanged():
    from gateway.rollouts.answers import DeployAnswer

    deployed = DeployAnswer(model="m", version=2, backend="tfserving", status="deployed")
    assert deployed.body() == {"model": "m", "version": 2, "backend": "tfserving", "status": "deployed", "canary": None}
    unchanged = DeployAnswer(model="m", version=2, backend="tfserving", status="unchanged", canary=5.0)
    assert unchanged.body() == {"model": "m", "version": 2, "backend": "tfserving", "status": "unchanged"}
