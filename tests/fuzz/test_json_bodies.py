"""JSON bodies: read in one pass, NaN and infinities included, within the nesting limit.

Properties: a body nested deeper than the limit is refused with the limit's message and never
parsed; any other body parses to exactly what the standard library reads (the reference, as it
takes TF Serving's ``NaN``/``Infinity`` tokens); no body raises anything but a ``ValueError``;
over HTTP, no body answers 500.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.core import jsonbody
from gateway.core.jsonbody import JsonLimit
from tests.fuzz.strategies import FUZZ, JSON_VALUES

HTTP = settings(FUZZ, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
DEPTH_MESSAGE = "request body refused: JSON nested "
ROUTES = ["/v1/models/toy/versions/2:predict", "/v2/models/toy/versions/2/infer", "/predictions/toy/2"]


def depth_of(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (a scalar: 0), without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            todo.extend((child, level + 1) for child in children)
    return deepest


def wrap(value: Any, shells: list[str]) -> Any:
    """``value`` inside ``shells``, innermost last: ``l`` a one-item list, ``d`` a one-key object."""
    for shell in reversed(shells):
        value = [value] if shell == "l" else {'k[\\"': value}  # a key with a bracket and a quote
    return value


def same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN (JSON text comparison keeps key order and float spelling)."""
    return json.dumps(a, allow_nan=True) == json.dumps(b, allow_nan=True)


def ints_fit(value: Any) -> bool:
    """Whether every integer in ``value`` fits 64 bits (orjson reads larger ones as floats, as before)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, int) and not -(2**63) <= item < 2**64:
            return False
        todo.extend(item.values() if isinstance(item, dict) else item if isinstance(item, list) else ())
    return True


LEAVES = JSON_VALUES | st.sampled_from([math.nan, math.inf, -math.inf, "NaN", "[[[", '\\"]'])
SHELLS = st.lists(st.sampled_from("ld"), max_size=200)


@FUZZ
@given(LEAVES, SHELLS, st.integers(min_value=2, max_value=160))
def test_a_body_parses_exactly_or_is_refused_for_its_depth(leaf, shells, limit):
    assume(ints_fit(leaf))
    value = wrap(leaf, shells)
    body = json.dumps(value, allow_nan=True).encode()
    depth = depth_of(value)
    if depth > limit:
        with pytest.raises(JsonLimit, match=f"JSON nested {depth} levels deep, over the limit of {limit}"):
            jsonbody.loads(body, max_depth=limit)
    else:
        assert same(jsonbody.loads(body, max_depth=limit), value)


# Bytes made of what the scan looks at (brackets, quotes, escapes, the letters of NaN and
# Infinity) and what a parser needs around them.
JSONISH = st.lists(
    st.sampled_from(["[", "]", "{", "}", '"', "\\", "\\\"", "\\\\", "N", "NaN", "-Infinity", "Infinity", "I",
                     ",", ":", "1", "-1.5e3", "null", "true", " ", "a", "\u00e9", "\\u005b"]),
    max_size=300,
).map(lambda parts: "".join(parts).encode())  # fmt: skip


@FUZZ
@given(JSONISH | st.binary(max_size=200), st.integers(min_value=2, max_value=64))
def test_any_bytes_parse_as_the_reference_or_raise_a_value_error(body, limit):
    try:
        got = jsonbody.loads(body, max_depth=limit)
    except ValueError:
        return  # JsonLimit, JSONDecodeError, UnicodeDecodeError: all answered 400
    try:
        want = json.loads(body.decode("utf-8"))
    except RecursionError:
        pytest.fail("the scan let through a body the reference cannot parse for its depth")
    if ints_fit(want):  # orjson reads integers beyond 64 bits as floats
        assert same(got, want)
    assert depth_of(got) <= limit


def holds_bool(value: Any) -> bool:
    """Whether a parsed JSON value holds a boolean anywhere (keys are strings: never)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, bool):
            return True
        todo.extend(item.values() if isinstance(item, dict) else item if isinstance(item, list) else ())
    return False


@FUZZ
@given(
    LEAVES | st.booleans(),
    SHELLS,
    st.lists(JSON_VALUES | st.booleans() | st.text(alphabet='tfrueals"', max_size=8), max_size=40),
)
def test_the_parse_says_may_hold_bools_whenever_the_body_holds_one_and_not_when_a_large_one_holds_none(
    leaf, shells, padding
):
    """``parse``'s flag (the decoders skip their search for booleans when it is False) is never
    False for a body with a boolean; on a body past the small-body test (4 kB) it is exact, strings
    spelling true or false included."""
    assume(ints_fit(leaf) and ints_fit(padding))
    for value in (wrap(leaf, shells[:60]), {"pad": "x" * 5000, "inputs": wrap(leaf, shells[:60]), "more": padding}):
        body = json.dumps(value, allow_nan=True).encode()
        got, bools = jsonbody.parse(body)
        if holds_bool(got):
            assert bools, body[:200]
        elif len(body) > 4096:
            assert not bools, body[:200]


def test_a_large_body_of_numbers_is_not_searched_for_booleans_again():
    """The scan that bounds the depth answers whether booleans are there: a large numeric body
    (a cnn image as OIP JSON) is searched once, not again for ``true`` and ``false``."""
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3072], "data": [0.5] * 3072}]}).encode()
    assert jsonbody.parse(body) == (json.loads(body), False)
    flagged = body.replace(b'"x"', b'"x", "flag": true', 1)
    assert jsonbody.parse(flagged)[1] is True
    quoted = body.replace(b'"x"', b'"true false"', 1)  # in a string: no boolean
    assert jsonbody.parse(quoted)[1] is False


def test_a_body_with_nan_is_parsed_once(monkeypatch):
    """Any NaN used to cost two full parses (orjson failing at the token, then the standard library)."""
    calls: list[str] = []
    for module, name in ((orjson, "orjson"), (json, "json")):
        real = module.loads
        monkeypatch.setattr(module, "loads", lambda body, real=real, name=name: calls.append(name) or real(body))
    rows = [[float(i), 2.0, 3.0, 4.0] for i in range(1000)]
    body = json.dumps({"instances": [*rows, [math.nan, 1.0, 2.0, 3.0]]}, allow_nan=True).encode()
    assert math.isnan(jsonbody.loads(body)["instances"][-1][0])
    assert calls == ["json"]
    calls.clear()
    assert jsonbody.loads(json.dumps({"instances": rows}).encode())["instances"] == rows
    assert calls == ["orjson"]
    calls.clear()
    assert jsonbody.loads(b'{"inputs": ["NaN", "Infinity"]}') == {"inputs": ["NaN", "Infinity"]}  # strings
    assert calls == ["orjson"]


# --- over HTTP ----------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("leaf", ["NaN", "1.0", "-Infinity"])
def test_the_deep_nan_body_is_a_400_naming_the_limit(client, route, leaf):
    """The finding: a 3 KB body nested 1,500 deep holding NaN was a RecursionError (a 500)."""
    body = ("[" * 1500 + leaf + "]" * 1500).encode()
    assert len(body) < 4096  # under the test settings' body limit: the depth is what is refused
    response = client.post(route, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == (
        "request body refused: JSON nested 1500 levels deep, over the limit of 64 (GATEWAY_MAX_JSON_DEPTH)"
    )


def test_the_depth_limit_is_a_setting(client):
    body = {"instances": [[[1.0, 2.0, 3.0, 4.0]]]}  # 4 levels
    assert client.post(ROUTES[0], json=body).json()["error"].startswith("input 'x'")  # decoded: a shape error
    services = client.app.state.services
    settings = services.settings.model_copy(update={"max_json_depth": 3})
    client.app.state.services = dataclasses.replace(services, settings=settings)
    response = client.post(ROUTES[0], json=body)
    assert response.json()["error"].startswith(f"{DEPTH_MESSAGE}4 levels deep, over the limit of 3"), response.text


@HTTP
@given(route=st.sampled_from(ROUTES), leaf=LEAVES, shells=SHELLS)
def test_no_nesting_answers_500(client, route, leaf, shells):
    body = json.dumps(wrap(leaf, shells), allow_nan=True).encode()
    response = client.post(route, content=body[:4096], headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text
    if depth_of(wrap(leaf, shells)) > 64 and len(body) <= 4096:
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith(DEPTH_MESSAGE), response.text
