"""A caller's deadline (``gateway.backends.deadline.DEADLINE``, set by the gRPC doors) bounds each
adapter's backend call: the backend call fails as a timeout when the caller would have stopped
waiting, well before the adapter's own timeout."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
from aiohttp import web

from gateway.backends.deadline import DEADLINE, within
from gateway.backends.tfserving.client import TFServingBackend
from gateway.backends.tfserving.protos import serving_pb2 as pb
from gateway.backends.torchserve import TorchServeBackend
from gateway.core.errors import BackendTimeout
from gateway.core.types import InferenceRequest, Target

REQUEST = InferenceRequest(inputs={"x": np.ones((1, 4), np.float32)})


def test_within_is_the_adapters_timeout_without_a_deadline():
    assert within(30.0) == 30.0
    token = DEADLINE.set(time.monotonic() + 0.5)
    try:
        assert 0.4 < within(30.0) <= 0.5
        assert within(0.1) == 0.1
    finally:
        DEADLINE.reset(token)


async def _timed_call(backend, target) -> float:
    token = DEADLINE.set(time.monotonic() + 0.3)
    start = time.monotonic()
    try:
        with pytest.raises(BackendTimeout):
            await backend.infer(target, REQUEST)
    finally:
        DEADLINE.reset(token)
    return time.monotonic() - start


async def test_torchserve_call_is_bounded_by_the_deadline():
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.json_response({"predictions": [[1, 1, 1, 1]]})

    app = web.Application()
    app.router.add_post("/predictions/{model}/{version}", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    backend = TorchServeBackend(url, url, timeout=30.0)
    await backend.start()
    try:
        elapsed = await _timed_call(backend, Target("toy", 1, backend))
    finally:
        await backend.close()
        await runner.cleanup()
    assert elapsed < 2.0


async def test_tfserving_call_is_bounded_by_the_deadline():
    async def slow(request, context):
        await asyncio.sleep(3)
        return pb.PredictResponse()

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(
        slow,
        request_deserializer=pb.PredictRequest.FromString,
        response_serializer=pb.PredictResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {"Predict": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    backend = TFServingBackend(f"127.0.0.1:{port}", timeout=30.0)
    await backend.start()
    try:
        elapsed = await _timed_call(backend, Target("toy", 2, backend))
    finally:
        await backend.close()
        await server.stop(0)
    assert elapsed < 2.0
