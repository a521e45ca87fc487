"""Open Inference Protocol (v2) through the gateway, in process, against backend doubles."""

from __future__ import annotations

import pytest


def infer_body(name="x", datatype="FP32", shape=(1, 4), data=(1, 2, 3, 4), **extra):
    return {
        "inputs": [{"name": name, "datatype": datatype, "shape": list(shape), "data": list(data)}],
        **extra,
    }


def test_health(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    r = client.get("/v2/health/ready")
    assert (r.status_code, r.json()) == (
        200,
        {"ready": True, "backends": {"tfserving": "closed", "torchserve": "closed"}},
    )


def test_infer_on_both_stacks(client):
    for version, backend in ((1, "torchserve"), (2, "tfserving")):
        r = client.post(f"/v2/models/toy/versions/{version}/infer", json=infer_body(id="req-7"))
        assert r.status_code == 200, r.text
        assert r.json() == {
            "model_name": "toy",
            "model_version": str(version),
            "id": "req-7",
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 4],
                         "data": [1.0 * version, 2.0 * version, 3.0 * version, 4.0 * version]}],
        }  # fmt: skip
        assert r.headers["X-Backend"] == backend


def test_int64_is_exact(client):
    big = 2**62 + 1  # not representable as a float64
    r = client.post("/v2/models/ints/infer", json=infer_body("n", "INT64", (2,), (big, -big)))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0] == {
        "name": "m",
        "datatype": "INT64",
        "shape": [2],
        "data": [big, -big],
    }


def test_bytes(client):
    r = client.post("/v2/models/words/infer", json=infer_body("text", "BYTES", (2,), ("héllo", "")))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["héllo", ""]
    assert r.json()["outputs"][0]["datatype"] == "BYTES"


def test_default_version_and_metadata(client):
    r = client.post("/v2/models/toy/infer", json=infer_body())
    assert r.headers["X-Model-Version"] == "1"
    meta = client.get("/v2/models/toy").json()
    assert meta["versions"] == ["1", "2", "3"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    meta2 = client.get("/v2/models/toy/versions/2").json()
    assert meta2["platform"] == "tensorflow_savedmodel"
    r = client.get("/v2/models/toy/versions/3/ready")
    assert (r.status_code, r.json()["ready"]) == (200, True)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (infer_body(datatype="FP64"), "input 'x': expected datatype FP32, got FP64"),
        (infer_body(datatype="FLOAT"), "input 'x': datatype must be one of BOOL"),
        (infer_body(shape=(2, 4)), "input 'x': shape [2, 4] needs 8 values, got 4"),
        (infer_body(shape=(4,)), "input 'x': expected shape [-1, 4], got [4]"),
        (infer_body(shape=(1, -4)), "input 'x': shape must be a list of non-negative integers"),
        (infer_body(name="q"), "unknown input 'q' (expected inputs: x)"),
        (infer_body(data=("a", "b", "c", "d")), "input 'x': expected FP32 values, got strings"),
        ({"inputs": []}, "'inputs' must be a non-empty list of tensors"),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4]}]},
            "input 'x': missing 'data'",
        ),
        (infer_body(outputs=[{"name": "nope"}]), "unknown output 'nope' (outputs: y)"),
        ([1, 2], "body must be a JSON object with an 'inputs' list"),
        (infer_body(data=(True, 2.5, 3, 4)), "input 'x': expected FP32 values, got booleans among the numbers"),
        (
            {"inputs": infer_body()["inputs"] * 2},
            "input 'x' is given more than once in 'inputs'",
        ),
    ],
)
def test_bad_infer_requests(client, body, message):
    r = client.post("/v2/models/toy/infer", json=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_missing_input_of_two(client):
    r = client.post("/v2/models/pair/infer", json=infer_body("a", shape=(1, 2), data=(1, 2)))
    assert r.status_code == 400
    assert r.json() == {"error": "missing input 'b'"}


def test_unknown_model_and_version(client):
    assert client.post("/v2/models/nope/infer", json=infer_body()).status_code == 404
    r = client.get("/v2/models/toy/versions/7/ready")
    assert r.status_code == 404
    assert r.json()["error"] == "model 'toy' has no version 7 (versions: 1, 2, 3)"
