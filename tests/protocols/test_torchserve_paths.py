"""TorchServe's inference paths through the gateway, in process, against backend doubles."""

from __future__ import annotations


def test_torchserve_versions_get_the_raw_body(client):
    r = client.post("/predictions/toy/3", content=b"\x00raw image bytes", headers={"Content-Type": "image/png"})
    assert r.status_code == 200
    assert r.content == b"echo:\x00raw image bytes"
    assert (r.headers["X-Model-Version"], r.headers["X-Backend"]) == ("3", "torchserve")


def test_tfserving_versions_take_rest_json(client):
    r = client.post("/predictions/toy/2", json={"instances": [[1, 2, 3, 4]]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [[2.0, 4.0, 6.0, 8.0]]}
    assert r.headers["X-Backend"] == "tfserving"


def test_default_and_errors(client):
    r = client.post("/predictions/toy", content=b"x")
    assert r.headers["X-Model-Version"] == "1"
    assert client.post("/predictions/ghost", content=b"x").status_code == 404
    r = client.post("/predictions/toy/2", content=b"not json")
    assert r.status_code == 400
    assert r.json()["error"].startswith("request body is not valid JSON")
