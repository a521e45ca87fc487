"""Schemathesis against the gateway's own OpenAPI schema, in process, on the fake-backend app.

Every operation but the deploy upload (a tar stream, covered by tests/admin) is fuzzed from its
schema: path parameters are steered towards the fake store's models, versions and labels (and
any other string), bodies come from the schema, admin calls carry the admin token. No answer may
be a server error, answers must match what the schema documents, and every error must be the
README's ``{"error": "..."}``.
"""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import make_fake_backends, make_fake_store, unit_settings
from tests.fuzz.strategies import FUZZ, JSON_VALUES, SCALARS, examples

ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}
# What the fake store of tests/conftest.py holds, plus names it does not.
PATH_VALUES = {
    "model": ["toy", "ints", "words", "pair", "nope"],
    "version": ["1", "2", "3", "9", "0", "abc"],
    "label": ["stable", "canary", "gold"],
}


def _steered_schema() -> dict[str, Any]:
    """The app's OpenAPI document, with string path parameters also drawing the fake store's names."""
    app = create_app(Settings(_env_file=None, model_store=Path("unused"), database_url="sqlite://"), backends={})
    document = copy.deepcopy(app.openapi())
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                known = PATH_VALUES.get(parameter["name"])
                if parameter["in"] == "path" and known and parameter["schema"].get("type") == "string":
                    parameter["schema"] = {"anyOf": [{"enum": known}, parameter["schema"]]}
    return document


schema = schemathesis.openapi.from_dict(_steered_schema()).exclude(path="/admin/models/{model}/deploy")
# The schema's examples, then generated cases (valid and invalid). The coverage phase (boundary
# values, unexpected methods) would add ~10 s for nothing the fuzzing phase does not reach.
schema.config.phases.update(phases=["examples", "fuzzing"])


@schemathesis.check
def errors_are_error_objects(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every 4xx/5xx answer is ``{"error": "<non-empty message>"}`` (README, "What the gateway speaks")."""
    if response.status_code < 400:
        return
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, f"error answer is not {{'error': ...}}: {body!r}"
    assert isinstance(body["error"], str) and body["error"].strip(), f"empty error message: {body!r}"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """One gateway for every operation, as one long-lived server would see the fuzzed calls in turn
    (admin writes included), rather than ~29 of them. schemathesis starts its lifespan with a
    test's first call and ends it at the test's teardown, so no watcher thread outlives a test."""
    store = make_fake_store(tmp_path_factory.mktemp("openapi"))
    yield create_app(unit_settings(store), backends=make_fake_backends())
    watchers = [t for t in threading.enumerate() if t.name == "registry-watcher"]
    assert not watchers, f"{len(watchers)} registry watchers outlived the schemathesis tests"


@schema.parametrize()
@settings(
    FUZZ,
    max_examples=examples(30),  # per operation
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_server_error_and_answers_match_the_schema(case, app):
    checks = [
        not_a_server_error,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        errors_are_error_objects,
    ]
    headers = ADMIN if case.path.startswith("/admin") else None
    response = case.call(app=app, headers=headers)
    case.validate_response(response, checks=checks, headers=headers, transport_kwargs={"app": app})


def test_a_superscript_version_is_a_bad_request(client):
    response = client.get("/v1/models/toy/versions/²")
    assert response.status_code == 400, response.text


# PUT /admin/state reads a YAML (or JSON) document from the raw body, so the schema has no body
# for it; documents are fuzzed here, against the desired-state rules of gateway.rollouts.state.
_VERSIONS = st.integers(-1, 4) | SCALARS | st.lists(st.integers(0, 3), max_size=2)
_POLICY = st.fixed_dictionaries(
    {}, optional={"canary": _VERSIONS, "version": _VERSIONS, "percent": st.floats() | SCALARS, "sticky_header": SCALARS}
)
_MODEL = st.fixed_dictionaries(
    {},
    optional={
        "labels": st.dictionaries(
            st.sampled_from(["stable", "canary", "gold"]) | st.text(max_size=4), _VERSIONS, max_size=3
        )
        | SCALARS,
        "traffic": _POLICY | SCALARS,
        "shadow": _POLICY | SCALARS,
    },
)
_STATE = st.fixed_dictionaries(
    {"models": st.dictionaries(st.sampled_from(["toy", "ints", "nope"]), _MODEL | SCALARS, max_size=2)}
)


@settings(FUZZ, max_examples=examples(100), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=(_STATE | JSON_VALUES).map(json.dumps) | st.text(max_size=30))
def test_state_documents_give_no_server_error(client, body):
    response = client.put("/admin/state", content=body.encode(), headers=ADMIN)
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert set(response.json()) == {"error"}
