"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), for either stack.

Triton's and KServe's gRPC clients call the gateway unchanged: ServerLive, ServerReady,
ServerMetadata, ModelReady, ModelMetadata and ModelInfer. Routing, keys, limits, errors and
metrics are the REST door's (``gateway.protocols.oip``): an empty ``model_version`` takes the
traffic policy (stable, or the canary for its share, sticky by the request metadata). An answer
is packed in ``raw_output_contents`` when the request was packed, else typed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from gateway.backends.catalog import PLATFORMS
from gateway.core.restjson import result_outputs
from gateway.core.types import InferenceRequest, InferenceResult
from gateway.protocols.common import mark_route, require_signature, signature_of
from gateway.protocols.pipeline import Call, dispatch, resolve
from gateway.protocols.rpc.calls import run
from gateway.protocols.rpc.oip_tensors import decode_inputs, encode_outputs, output_names
from gateway.protocols.rpc.protos import inference_pb2 as pb
from gateway.routing.table import Resolved, parse_version
from gateway.services import Services

PROTOCOL = "oip_grpc"
SERVICE = "inference.GRPCInferenceService"
SERVER_NAME = "twin-stack-gateway"
#: The gateway's version, as its OpenAPI document states it.
SERVER_VERSION = "0.1.0"


def _resolve_named(call: Call, model: str, version: str) -> Resolved:
    """A metadata or readiness request's version: the one named, else the model's default (stable)."""
    table = call.services.router.table
    if version:
        return table.resolve(model, parse_version(version))
    return table.model(model).stable()


class InferenceService:
    """The methods of ``inference.GRPCInferenceService``, over the one pipeline."""

    def __init__(self, services: Services, ready: Callable[[], bool]) -> None:
        self.services = services
        self.ready = ready

    def _run(self, context: grpc.aio.ServicerContext, handle: Callable[[Call], Awaitable[Any]], measured: bool) -> Any:
        return run(self.services, PROTOCOL, context, handle, measured=measured)

    async def server_live(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready())

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION)

    async def model_ready(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        async def handle(call: Call) -> pb.ModelReadyResponse:
            target = _resolve_named(call, request.name, request.version).target
            status = await target.backend.status(target.model, target.version)
            return pb.ModelReadyResponse(ready=status.available)

        result: pb.ModelReadyResponse = await self._run(context, handle, measured=False)
        return result

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        async def handle(call: Call) -> pb.ModelMetadataResponse:
            resolved = _resolve_named(call, request.name, request.version)
            target = resolved.target
            signature = require_signature(target, await signature_of(target))
            versions = (
                [target.version] if request.version else sorted(call.services.router.table.model(target.model).versions)
            )
            response = pb.ModelMetadataResponse(
                name=target.model,
                versions=[str(v) for v in versions],
                platform=PLATFORMS.get(target.backend.kind, target.backend.kind),
            )
            for specs, into in ((signature.inputs, response.inputs), (signature.outputs, response.outputs)):
                for spec in specs:
                    into.add(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
            return response

        result: pb.ModelMetadataResponse = await self._run(context, handle, measured=False)
        return result

    async def model_infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        result: pb.ModelInferResponse = await self._run(context, lambda call: self._infer(call, request), measured=True)
        return result

    async def _infer(self, call: Call, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        params = {"model": request.model_name}
        if request.model_version:
            params["version"] = request.model_version
        resolved = resolve(call, params)
        mark_route(call.state, resolved)
        target = resolved.target
        signature = require_signature(target, await signature_of(target))
        names = output_names(request, signature)
        inputs = await call.decode(request.ByteSize(), lambda: decode_inputs(request, signature))
        result = await dispatch(call, None, resolved, InferenceRequest(inputs=inputs, output_filter=names))
        assert isinstance(result, InferenceResult)  # an InferenceRequest is answered by infer()
        response = pb.ModelInferResponse(model_name=target.model, model_version=str(target.version), id=request.id)
        encode_outputs(result_outputs(result, signature), names, response, raw=bool(request.raw_input_contents))
        return response


def handlers(services: Services, ready: Callable[[], bool]) -> list[grpc.GenericRpcHandler]:
    """The generic handler of ``inference.GRPCInferenceService``."""
    service = InferenceService(services, ready)

    def unary(method: object, request: type[Message], response: type[Message]) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            method, request_deserializer=request.FromString, response_serializer=response.SerializeToString
        )

    methods = {
        "ServerLive": unary(service.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": unary(service.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ServerMetadata": unary(service.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
        "ModelReady": unary(service.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
        "ModelMetadata": unary(service.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
        "ModelInfer": unary(service.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
    }
    return [grpc.method_handlers_generic_handler(SERVICE, methods)]
