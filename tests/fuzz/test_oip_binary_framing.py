"""The OIP binary tensor data framing, fuzzed over HTTP in process on the fake-backend app.

A well-framed request (binary and JSON inputs mixed, binary or JSON outputs) comes back with
exactly what the fake backend computes; the same request broken one way (sizes that disagree with
the header, a truncated body, bytes appended, a header length past the body or inside the JSON, a
BYTES length past the end) is a 400 with a message, never a 500.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.protocols import oip_binary
from tests.fuzz.strategies import FUZZ

HTTP = settings(FUZZ, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
HEADER = oip_binary.HEADER
#: (model, version, inputs as (name, datatype, width or None for 1-D)) of tests/conftest.py's store.
MODELS = [
    ("toy", 1, [("x", "FP32", 4)]),
    ("toy", 2, [("x", "FP32", 4)]),
    ("ints", 1, [("n", "INT64", None)]),
    ("words", 1, [("text", "BYTES", None)]),
    ("pair", 1, [("a", "FP32", 2), ("b", "FP32", 2)]),
]
MUTATIONS = ["none", "truncate", "append", "header_past_body", "header_inside_json", "size", "bytes_length"]


@st.composite
def tensors(draw: Any, datatype: str, width: int | None) -> np.ndarray:
    rows = draw(st.integers(1, 3))
    shape = (rows,) if width is None else (rows, width)
    if datatype == "BYTES":
        return np.array(draw(st.lists(st.binary(max_size=6), min_size=rows, max_size=rows)), dtype=object)
    dtype = np.float32 if datatype == "FP32" else np.int64
    elements = st.floats(-1e3, 1e3, width=32) if datatype == "FP32" else st.integers(-(2**40), 2**40)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def requests(draw: Any) -> tuple[str, int, dict[str, np.ndarray], dict[str, Any], list[bytes], bool]:
    model, version, specs = draw(st.sampled_from(MODELS))
    values = {name: draw(tensors(datatype, width)) for name, datatype, width in specs}
    inputs, chunks = [], []
    for name, datatype, _ in specs:
        tensor = {"name": name, "datatype": datatype, "shape": list(values[name].shape)}
        if draw(st.booleans()) or datatype == "BYTES":  # binary (BYTES always: JSON takes str only)
            raw = oip_binary.to_bytes(values[name])
            chunks.append(raw)
            tensor["parameters"] = {"binary_data_size": len(raw)}
        else:
            tensor["data"] = values[name].ravel().tolist()
        inputs.append(tensor)
    binary_out = draw(st.booleans()) or model == "words"  # JSON answers hold text only
    request = {"inputs": inputs, "parameters": {"binary_data_output": binary_out}}
    return model, version, values, request, chunks, binary_out


def expected(model: str, version: int, values: dict[str, np.ndarray]) -> np.ndarray:
    """What the fake backend answers: the first input times the version (BYTES echoed)."""
    first = next(iter(values.values()))
    return first if first.dtype == object else (first * version).astype(first.dtype)


@HTTP
@given(requests(), st.sampled_from(MUTATIONS), st.integers(1, 12), st.data())
def test_binary_framing_answers_exactly_or_refuses_with_a_400(client, case, mutation, amount, data):
    model, version, values, payload, chunks, binary_out = case
    if mutation == "bytes_length" and model != "words":
        mutation = "none"
    if mutation in ("size", "bytes_length") and not chunks:
        mutation = "append"
    binary_inputs = [t for t in payload["inputs"] if "parameters" in t]
    if mutation == "size":
        which = data.draw(st.sampled_from(binary_inputs))
        size = which["parameters"]["binary_data_size"]
        which["parameters"]["binary_data_size"] = data.draw(st.sampled_from([size + amount, max(size - amount, 0)]))
        if which["parameters"]["binary_data_size"] == size:
            which["parameters"]["binary_data_size"] = size + amount
    header = json.dumps(payload).encode()
    tail = b"".join(chunks)
    if mutation == "bytes_length":  # the first element claims more bytes than there are
        tail = struct.pack("<I", len(tail) + amount) + tail[4:]
    body = header + tail
    length = len(header)
    if mutation == "truncate":  # into the JSON header too, when the tail is shorter than ``amount``
        body = body[: len(body) - amount]
    elif mutation == "append":
        body += b"\x00" * amount
    elif mutation == "header_past_body":
        length = len(body) + amount
    elif mutation == "header_inside_json":
        length = max(len(header) - amount, 0)
    r = client.post(f"/v2/models/{model}/versions/{version}/infer", content=body, headers={HEADER: str(length)})
    if mutation == "none":
        assert r.status_code == 200, r.text
        want = expected(model, version, values)
        if binary_out:
            cut = int(r.headers[HEADER])
            answer, rest = json.loads(r.content[:cut]), r.content[cut:]
            (tensor,) = answer["outputs"]
            got = oip_binary.to_array(tensor["name"], rest, tensor["datatype"], tensor["shape"])
        else:
            assert HEADER not in r.headers
            (tensor,) = r.json()["outputs"]
            got = np.array(tensor["data"], dtype=want.dtype).reshape(tensor["shape"])
        assert got.tolist() == want.tolist()
        return
    assert r.status_code == 400, (mutation, r.status_code, r.text)
    error = r.json()["error"]
    assert isinstance(error, str) and error.strip()
