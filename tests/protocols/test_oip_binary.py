"""The OIP binary tensor data extension: the framing functions, and requests through the gateway
in process against backend doubles (the Triton client itself is used end to end, tests/e2e)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.core.errors import BadRequest
from gateway.protocols import oip_binary
from tests.fakes import make_version

HEADER = "Inference-Header-Content-Length"


def framed(request: dict, *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    """A request in the binary form: its JSON header, then ``chunks``, and the HTTP headers."""
    header = json.dumps(request).encode()
    return header + b"".join(chunks), {HEADER: str(len(header))}


def binary_input(name: str, datatype: str, shape: list[int], raw: bytes) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": len(raw)}}


def parse_answer(r) -> tuple[dict, bytes]:
    """An answer's JSON header and the binary bytes after it."""
    length = r.headers.get(HEADER)
    if length is None:
        return r.json(), b""
    return json.loads(r.content[: int(length)]), r.content[int(length) :]


# -- the framing functions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("FP32", np.array([[0.5, -1.25], [3.0, np.inf]], dtype=np.float32)),
        ("FP16", np.array([1.5, -2.0, 65504.0, 0.0], dtype=np.float16)),
        ("FP64", np.array([1e300, -0.0], dtype=np.float64)),
        ("INT64", np.array([2**62 + 1, -(2**63)], dtype=np.int64)),
        ("UINT16", np.array([[0, 65535]], dtype=np.uint16)),
        ("INT8", np.array([-128, 127], dtype=np.int8)),
        ("BOOL", np.array([True, False, True], dtype=np.bool_)),
    ],
)
def test_fixed_size_round_trip_is_little_endian_and_exact(datatype, values):
    raw = oip_binary.to_bytes(values)
    assert raw == values.astype(values.dtype.newbyteorder("<")).tobytes() or datatype == "BOOL"
    back = oip_binary.to_array("x", raw, datatype, list(values.shape))
    assert back.dtype == values.dtype and back.shape == values.shape
    assert np.array_equal(back, values)


def test_bool_is_one_byte_per_value_and_nonzero_is_true():
    assert oip_binary.to_bytes(np.array([True, False, True])) == b"\x01\x00\x01"
    assert oip_binary.to_array("b", b"\x00\x02\xff", "BOOL", [3]).tolist() == [False, True, True]


def test_big_endian_arrays_are_written_little_endian():
    values = np.array([1, 256], dtype=">i4")
    assert oip_binary.to_bytes(values) == struct.pack("<2i", 1, 256)


def test_bytes_are_four_byte_length_then_the_bytes():
    values = np.array([b"ab", b"", "h\u00e9".encode()], dtype=object)
    raw = oip_binary.to_bytes(values)
    assert raw == b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x03\x00\x00\x00h\xc3\xa9"
    back = oip_binary.to_array("t", raw, "BYTES", [3])
    assert back.dtype == object and back.tolist() == [b"ab", b"", "h\u00e9".encode()]
    assert oip_binary.to_bytes(np.array(["ok"], dtype=object)) == b"\x02\x00\x00\x00ok"  # str as UTF-8


def test_bf16_round_trip_widens_to_fp32_exactly():
    values = np.array([1.0, -2.5, 3.140625, np.inf, 0.0], dtype=np.float32)  # all exact in BF16
    raw = oip_binary.to_bytes(values, "BF16")
    assert len(raw) == 2 * values.size
    assert raw[:2] == b"\x80\x3f"  # 1.0 is 0x3F80, little-endian
    back = oip_binary.to_array("x", raw, "BF16", [5])
    assert back.dtype == np.float32 and np.array_equal(back, values)
    rounded = oip_binary.to_array("x", oip_binary.to_bytes(np.array([1.00390625], np.float32), "BF16"), "BF16", [1])
    assert rounded.tolist() == [1.0]  # halfway between 1.0 and 1.0078125: ties to even
    nan = oip_binary.to_array("x", oip_binary.to_bytes(np.array([np.nan], np.float32), "BF16"), "BF16", [1])
    assert np.isnan(nan).all()


@pytest.mark.parametrize(
    ("raw", "datatype", "shape", "message"),
    [
        (b"\x00" * 12, "FP32", [1, 4], "shape [1, 4] of FP32 needs 4 x 4 = 16 bytes, binary_data_size is 12"),
        (b"\x00" * 20, "FP32", [1, 4], "needs 4 x 4 = 16 bytes, binary_data_size is 20"),
        (b"\x00" * 3, "FP16", [2], "needs 2 x 2 = 4 bytes"),
        (b"\x05\x00\x00\x00ab", "BYTES", [1], "BYTES element 0 is 5 bytes long, past the end of the input's 6 bytes"),
        (b"\x01\x00", "BYTES", [1], "BYTES element 0 has a truncated 4-byte length"),
        (b"\x01\x00\x00\x00a\x00\x00\x00\x00", "BYTES", [1], "4 bytes left over after its 1 BYTES elements"),
        (b"\x01\x00\x00\x00a", "BYTES", [2], "shape needs 2 BYTES elements, the binary data holds 1"),
        (b"\x00" * 4, "COMPLEX", [1], "datatype must be one of BOOL"),
    ],
)
def test_malformed_tensor_bytes_name_the_input_and_the_expectation(raw, datatype, shape, message):
    with pytest.raises(BadRequest, match=r"^input 'x': ") as info:
        oip_binary.to_array("x", raw, datatype, shape)
    assert message in info.value.message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "must be a non-negative integer, got '-1'"),
        ("1.5", "must be a non-negative integer, got '1.5'"),
        ("ten", "must be a non-negative integer"),
        ("\u0661", "must be a non-negative integer"),  # a digit, but not an ASCII one
        ("101", "header is 101 but the request body has only 100 bytes"),
    ],
)
def test_header_length_must_be_an_integer_within_the_body(value, message):
    with pytest.raises(BadRequest, match=HEADER) as info:
        oip_binary.header_length({HEADER.lower(): value}, 100)
    assert message in info.value.message


def test_header_length_absent_or_within_the_body():
    assert oip_binary.header_length({}, 100) is None
    assert oip_binary.header_length({HEADER.lower(): "100"}, 100) == 100


@given(st.binary(max_size=64), st.sampled_from(["FP32", "FP16", "BOOL", "BYTES", "INT64", "BF16"]), st.integers(0, 9))
def test_any_bytes_decode_or_give_a_bad_request(raw, datatype, count):
    try:
        array = oip_binary.to_array("x", raw, datatype, [count])
    except BadRequest as exc:
        assert exc.message.startswith("input 'x': ")
    else:
        assert array.shape == (count,)
        if datatype != "BYTES":
            assert oip_binary.to_bytes(array, datatype) == raw or datatype in ("BOOL", "BF16")


# -- through the gateway -------------------------------------------------------------------------


@pytest.fixture
def client(settings, fake_store, fake_backends):
    make_version(fake_store, "half", 1, "tfserving", {
        "inputs": [{"name": "h", "datatype": "FP16", "shape": [-1]}],
        "outputs": [{"name": "y", "datatype": "FP16", "shape": [-1]}],
    })  # fmt: skip
    make_version(fake_store, "flags", 1, "torchserve", {
        "inputs": [{"name": "f", "datatype": "BOOL", "shape": [-1]}],
        "outputs": [{"name": "g", "datatype": "BOOL", "shape": [-1]}],
    })  # fmt: skip
    with TestClient(create_app(settings, backends=fake_backends)) as c:
        yield c


X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


def test_server_metadata_lists_the_extension(client):
    r = client.get("/v2")
    assert r.status_code == 200
    assert r.json()["extensions"] == ["binary_tensor_data"]
    assert r.json()["name"] == "twin-stack-gateway"


@pytest.mark.parametrize("version", [1, 2])  # a TorchServe and a TF Serving version
def test_binary_input_json_output(client, fake_backends, version):
    body, headers = framed({"id": "b1", "inputs": [binary_input("x", "FP32", [1, 4], X.tobytes())]}, X.tobytes())
    r = client.post(f"/v2/models/toy/versions/{version}/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert HEADER not in r.headers and r.headers["content-type"] == "application/json"
    assert r.json()["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [1, 4], "data": (X * version).ravel().tolist()}
    ]
    assert r.json()["id"] == "b1"
    sent = fake_backends["torchserve" if version == 1 else "tfserving"].requests[-1][1].inputs["x"]
    assert sent.dtype == np.float32 and np.array_equal(sent, X)


@pytest.mark.parametrize(
    ("request_parameters", "output", "binary"),
    [
        ({"binary_data_output": True}, None, True),
        ({}, {"name": "y", "parameters": {"binary_data": True}}, True),
        ({"binary_data_output": True}, {"name": "y", "parameters": {"binary_data": False}}, False),
        ({"binary_data_output": False}, {"name": "y"}, False),
    ],
)
def test_binary_outputs_when_asked(client, request_parameters, output, binary):
    request = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": X.ravel().tolist()}]}
    if request_parameters:
        request["parameters"] = request_parameters
    if output is not None:
        request["outputs"] = [output]
    r = client.post("/v2/models/toy/versions/2/infer", json=request)
    assert r.status_code == 200, r.text
    answer, tail = parse_answer(r)
    (tensor,) = answer["outputs"]
    if binary:
        assert r.headers["content-type"] == "application/octet-stream"
        assert tensor == {"name": "y", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}
        assert np.array_equal(np.frombuffer(tail, "<f4").reshape(1, 4), X * 2)
        assert int(r.headers[HEADER]) + 16 == len(r.content)
        assert r.headers["X-Backend"] == "tfserving"  # the routing headers stay
    else:
        assert tail == b"" and tensor["data"] == (X * 2).ravel().tolist()


def test_mixed_binary_and_json_inputs(client, fake_backends):
    a = np.array([[1.0, 2.0]], dtype=np.float32)
    request = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [5.0, 6.0]},
            binary_input("b", "FP32", [1, 2], a.tobytes()),
        ],
        "parameters": {"binary_data_output": True},
    }
    body, headers = framed(request, a.tobytes())
    r = client.post("/v2/models/pair/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    inputs = fake_backends["tfserving"].requests[-1][1].inputs
    assert inputs["a"].tolist() == [[5.0, 6.0]] and inputs["b"].tolist() == [[1.0, 2.0]]


def test_two_binary_inputs_take_their_bytes_in_order(client, fake_backends):
    a, b = np.array([[1, 2]], np.float32), np.array([[3, 4]], np.float32)
    request = {
        "inputs": [binary_input("b", "FP32", [1, 2], b.tobytes()), binary_input("a", "FP32", [1, 2], a.tobytes())]
    }
    body, headers = framed(request, b.tobytes(), a.tobytes())
    assert client.post("/v2/models/pair/infer", content=body, headers=headers).status_code == 200
    inputs = fake_backends["tfserving"].requests[-1][1].inputs
    assert inputs["a"].tolist() == [[1, 2]] and inputs["b"].tolist() == [[3, 4]]


def test_fp16_bool_bytes_and_int64_through_the_binary_form(client):
    cases = [
        ("half", "h", "FP16", np.array([0.5, -1.5, 65504.0], np.float16), np.array([0.5, -1.5, 65504.0], np.float16)),
        ("flags", "f", "BOOL", np.array([True, False]), np.array([True, False])),
        ("words", "text", "BYTES", np.array([b"h\xc3\xa9", b""], object), np.array([b"h\xc3\xa9", b""], object)),
        ("ints", "n", "INT64", np.array([2**62 + 1, -5], np.int64), np.array([2**62 + 1, -5], np.int64)),
    ]
    for model, name, datatype, values, want in cases:
        raw = oip_binary.to_bytes(values)
        request = {
            "inputs": [binary_input(name, datatype, [values.size], raw)],
            "parameters": {"binary_data_output": True},
        }
        body, headers = framed(request, raw)
        r = client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
        assert r.status_code == 200, (model, r.text)
        answer, tail = parse_answer(r)
        (tensor,) = answer["outputs"]
        assert tensor["datatype"] == datatype and tensor["parameters"]["binary_data_size"] == len(tail)
        got = oip_binary.to_array(name, tail, datatype, tensor["shape"])
        assert got.dtype == want.dtype and got.tolist() == want.tolist(), model


def test_non_finite_binary_outputs_keep_their_bits(client):
    values = np.array([np.nan, np.inf, -np.inf, 1.0], np.float16)
    raw = values.tobytes()
    request = {
        "inputs": [binary_input("h", "FP16", [4], raw)],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }
    body, headers = framed(request, raw)
    r = client.post("/v2/models/half/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert parse_answer(r)[1] == raw


@pytest.mark.parametrize(
    ("inputs", "chunks", "header", "message"),
    [
        ([binary_input("x", "FP32", [1, 4], b"\x00" * 12)], [b"\x00" * 12], None,
         "input 'x': shape [1, 4] of FP32 needs 4 x 4 = 16 bytes, binary_data_size is 12"),
        ([binary_input("x", "FP32", [1, 4], b"\x00" * 16)], [b"\x00" * 8], None,
         "input 'x': binary_data_size is 16 but only 8 bytes of binary data are left after the JSON header"),
        ([binary_input("x", "FP32", [1, 4], b"\x00" * 16)], [b"\x00" * 20], None,
         "4 bytes of binary data are left over after the JSON header and the binary inputs"),
        ([{**binary_input("x", "FP32", [1, 4], b"\x00" * 16), "data": [1, 2, 3, 4]}], [b"\x00" * 16], None,
         "input 'x': give its values either in 'data' or as binary data, not both"),
        ([{**binary_input("x", "FP32", [1, 4], b""), "parameters": {"binary_data_size": -16}}], [b"\x00" * 16], None,
         "input 'x': binary_data_size must be a non-negative integer, got -16"),
        ([{**binary_input("x", "FP32", [1, 4], b""), "parameters": {"binary_data_size": "16"}}], [b"\x00" * 16], None,
         "input 'x': binary_data_size must be a non-negative integer, got '16'"),
        ([{**binary_input("x", "FP32", [1, 4], b""), "parameters": [16]}], [b"\x00" * 16], None,
         "input 'x': 'parameters' must be an object"),
        ([binary_input("x", "FP8", [1, 4], b"\x00" * 4)], [b"\x00" * 4], None,
         "input 'x': datatype must be one of BOOL"),
        ([binary_input("x", "FP32", [1, 4], b"\x00" * 16)], [b"\x00" * 16], "99999",
         "Inference-Header-Content-Length header is 99999 but the request body has only"),
        ([binary_input("x", "FP32", [1, 4], b"\x00" * 16)], [b"\x00" * 16], "-5",
         "Inference-Header-Content-Length header must be a non-negative integer, got '-5'"),
        ([binary_input("x", "FP32", [1, 4], b"\x00" * 16)], [b"\x00" * 16], "abc",
         "Inference-Header-Content-Length header must be a non-negative integer, got 'abc'"),
        ([binary_input("x", "FP32", [1, 4], b"\x00" * 16)], [], "",
         "input 'x': binary_data_size given but the request has no Inference-Header-Content-Length header"),
    ],
)  # fmt: skip
def test_malformed_binary_requests_are_400_naming_the_problem(client, inputs, chunks, header, message):
    body, headers = framed({"inputs": inputs}, *chunks)
    if header == "":  # the JSON header alone, without the HTTP header
        headers, body = {}, json.dumps({"inputs": inputs}).encode()
    elif header is not None:
        headers[HEADER] = header
    r = client.post("/v2/models/toy/versions/2/infer", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_output_parameters_must_be_booleans(client):
    request = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}],
        "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}],
    }
    r = client.post("/v2/models/toy/infer", json=request)
    assert (r.status_code, r.json()["error"]) == (400, "output 'y': binary_data must be true or false, got 'yes'")
    r = client.post("/v2/models/toy/infer", json={**request, "outputs": [], "parameters": {"binary_data_output": 1}})
    assert (r.status_code, r.json()["error"]) == (400, "request: binary_data_output must be true or false, got 1")


def test_binary_bodies_keep_the_body_limit(client):
    raw = b"\x00" * 4096  # the unit settings allow 4096 bytes in all
    body, headers = framed({"inputs": [binary_input("x", "FP32", [256, 4], raw)]}, raw)
    r = client.post("/v2/models/toy/infer", content=body, headers=headers)
    assert r.status_code == 413 and "GATEWAY_MAX_BODY_BYTES" in r.json()["error"]


def test_any_framing_is_answered_or_refused_with_a_400(client):
    @hypothesis_settings(max_examples=150, deadline=None)
    @given(st.binary(max_size=40), st.integers(0, 200), st.integers(-2, 40), st.sampled_from(["FP32", "BYTES"]))
    def check(raw, cut, size, datatype):
        model, name = ("toy", "x") if datatype == "FP32" else ("words", "text")
        tensor = {"name": name, "datatype": datatype, "shape": [1, 4] if datatype == "FP32" else [2],
                  "parameters": {"binary_data_size": size}}  # fmt: skip
        body, headers = framed({"inputs": [tensor]}, raw)
        headers[HEADER] = str(min(cut, len(body) + 5))
        r = client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
        assert r.status_code in (200, 400), r.text
        if r.status_code == 400:
            assert r.json()["error"]

    check()
