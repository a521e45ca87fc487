"""TF Serving's ``Predict`` over the lean HTTP/2 client (the default) and over ``grpc.aio``, against
the same running TF Serving-compatible server: the same answers and the same errors, word for word."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.backends.tfserving.client import PREDICT_CLIENTS, TFServingBackend
from gateway.core.errors import BadRequest, GatewayError, VersionMissing
from gateway.core.types import InferenceRequest, Target


@pytest.fixture
async def adapters(stack):
    made = {
        name: TFServingBackend(stack.tfserving_target, predict_client=name, timeout=20.0) for name in PREDICT_CLIENTS
    }
    for adapter in made.values():
        await adapter.start()
    yield made
    for adapter in made.values():
        await adapter.close()


async def predict(adapter: TFServingBackend, version: int, rows: list[list[float]]) -> dict[str, np.ndarray]:
    signature = await adapter.signature("mlp", 2)
    assert signature is not None
    name = signature.inputs[0].name
    target = Target("mlp", version, adapter, signature)
    result = await adapter.infer(target, InferenceRequest({name: np.asarray(rows, dtype=np.float32)}))
    return result.outputs(signature)


async def test_both_clients_give_the_same_answers(adapters, samples):
    sample_in, sample_out = samples("mlp", 2)
    answers = {name: await predict(adapter, 2, sample_in["instances"]) for name, adapter in adapters.items()}
    assert adapters["http2"]._h2 is not None  # the lean client made the call
    first, second = answers.values()
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    np.testing.assert_allclose(next(iter(first.values())), sample_out["predictions"], atol=1e-5)


@pytest.mark.parametrize(
    ("version", "rows", "error"),
    [(99, [[0.0, 0.0, 0.0, 0.0]], VersionMissing), (2, [[1.0, 2.0, 3.0]], BadRequest)],
    ids=["version-missing", "wrong-shape"],
)
async def test_both_clients_give_the_same_errors(adapters, version, rows, error):
    messages = []
    for adapter in adapters.values():
        with pytest.raises(GatewayError) as caught:
            await predict(adapter, version, rows)
        assert type(caught.value) is error
        messages.append((caught.value.message, caught.value.status_code))
    assert messages[0] == messages[1], messages
