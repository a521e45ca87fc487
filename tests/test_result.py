"""One result shape: every consumer reads a backend's answer with ``outputs(signature)``; a body
is read once, and only when someone needs its arrays; pass-through is an adapter's capability that
the pipeline asks, not a method that raises."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.backends.tfserving.client import TFServingBackend
from gateway.backends.torchserve import TorchServeBackend
from gateway.core.errors import BackendError
from gateway.core.restjson import decode_outputs, result_body
from gateway.core.tensors import Signature
from gateway.core.types import Backend, Form, InferenceResult

SIGNATURE = Signature.from_json({
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
})  # fmt: skip
ROW_BODY = b'{"predictions": [[1.0, 2.0]]}'


class CountingDecode:
    def __init__(self) -> None:
        self.calls: list[tuple[bytes, Form, Signature | None]] = []

    def __call__(self, body: bytes, form: Form, signature: Signature | None) -> dict[str, np.ndarray]:
        self.calls.append((body, form, signature))
        return decode_outputs(body, form, signature)


def test_arrays_are_the_outputs_whatever_the_signature():
    y = np.array([[1.0, 2.0]], np.float32)
    result = InferenceResult({"y": y})
    assert result.outputs(SIGNATURE)["y"] is y
    assert result.outputs(None)["y"] is y
    assert result.body is None


def test_a_body_is_read_at_the_first_outputs_call_and_only_once():
    decode = CountingDecode()
    result = InferenceResult(body=ROW_BODY, form="row", decode=decode)
    assert decode.calls == []
    first = result.outputs(SIGNATURE)
    np.testing.assert_array_equal(first["y"], [[1.0, 2.0]])
    assert first["y"].dtype == np.float32  # typed by the signature
    assert result.outputs(SIGNATURE) is first
    assert decode.calls == [(ROW_BODY, "row", SIGNATURE)]


def test_a_codec_of_the_same_form_sends_the_body_on_unread():
    decode = CountingDecode()
    result = InferenceResult(body=ROW_BODY, form="row", decode=decode)
    assert result_body(result, "row", SIGNATURE) is ROW_BODY
    assert decode.calls == []
    assert result_body(result, "column", SIGNATURE) == b'{"outputs":[[1.0,2.0]]}'
    assert len(decode.calls) == 1


def test_a_pass_through_answer_is_read_in_its_callers_form():
    decode = CountingDecode()
    answer = InferenceResult(body=ROW_BODY, form=None, decode=decode, content_type="application/json")
    with pytest.raises(BackendError, match="no form the gateway reads"):
        answer.outputs(SIGNATURE)
    read = answer.in_form("row")
    assert (read.body, read.form, read.content_type) == (ROW_BODY, "row", "application/json")
    np.testing.assert_array_equal(read.outputs(SIGNATURE)["y"], [[1.0, 2.0]])


def test_pass_through_is_a_capability_an_adapter_has_or_has_not():
    torchserve = TorchServeBackend("http://127.0.0.1:1", "http://127.0.0.1:2")
    tfserving = TFServingBackend("127.0.0.1:1")
    assert isinstance(torchserve, Backend) and isinstance(tfserving, Backend)
    assert torchserve.passthrough is torchserve
    assert tfserving.passthrough is None
    assert not hasattr(tfserving, "forward")  # no method that only raises "not supported"
