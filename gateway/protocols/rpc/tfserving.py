"""TF Serving's gRPC API, served by the gateway for models on either stack.

``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata) and
``tensorflow.serving.ModelService`` (GetModelStatus), with the gateway's own lean messages: an
existing TF Serving client points at the gateway and changes nothing. ``ModelSpec`` routes as the
REST paths do: ``version`` (an explicit version), ``version_label`` (a label), or neither (the
traffic policy: stable, or the canary for its share, sticky by the request metadata).

Answers are filled as TF Serving fills them (tensorflow/serving, 2.20):
- Predict: ``model_spec`` holds the name, the version that answered and the signature name used,
  ``serving_default`` when the request named none (``servables/tensorflow/predict_util.cc``,
  ``RunPredict`` -> ``MakeModelSpec`` in ``servables/tensorflow/util.cc``); a signature the
  version lacks is FAILED_PRECONDITION ``Serving signature key "x" not found.``.
- GetModelMetadata: ``metadata_field`` must be given and be ``signature_def``; ``model_spec`` holds
  the name and version only (``servables/tensorflow/get_model_metadata_impl.cc``).
- GetModelStatus: with a version, that version only; without, every version of the model
  (``model_servers/get_model_status_impl.cc``).
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
import numpy as np
from google.protobuf.message import Message

from gateway.backends.tfserving.codec import from_tensor_proto, tf_dtype_name, to_tensor_proto
from gateway.backends.tfserving.protos import error_codes_pb2 as codes
from gateway.backends.tfserving.protos import serving_pb2 as pb
from gateway.backends.tfserving.protos import tensorflow_pb2 as tf_pb2
from gateway.core.errors import BadRequest, GatewayError
from gateway.core.restjson import result_outputs
from gateway.core.tensors import Signature, TensorSpec, check_shape, datatype_of
from gateway.core.types import InferenceRequest, InferenceResult, Target
from gateway.protocols.common import mark_route, require_signature, signature_of
from gateway.protocols.pipeline import Call, dispatch, resolve
from gateway.protocols.rpc.calls import run
from gateway.services import Services

PROTOCOL = "tfserving_grpc"
PREDICTION = "tensorflow.serving.PredictionService"
MODEL = "tensorflow.serving.ModelService"
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"


class FailedPrecondition(GatewayError):
    """A request TF Serving answers with FAILED_PRECONDITION (a signature the version lacks)."""

    status_code = 409


def _params(spec: pb.ModelSpec) -> dict[str, str]:
    """The pipeline's route parameters of a ``ModelSpec``: model, and version or label."""
    if not spec.name:
        raise BadRequest("model_spec.name must name a model")
    params = {"model": spec.name}
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        params["version"] = str(spec.version.value)
    elif choice == "version_label":
        params["label"] = spec.version_label
    return params


def _check_signature_name(spec: pb.ModelSpec) -> str:
    name = spec.signature_name or DEFAULT_SIGNATURE
    if name != DEFAULT_SIGNATURE:  # the gateway's versions have the one signature
        raise FailedPrecondition(f'Serving signature key "{name}" not found.')
    return name


def decode_inputs(request: pb.PredictRequest, signature: Signature, max_elements: int) -> dict[str, np.ndarray]:
    """The request's tensors (typed values or ``tensor_content``) checked against ``signature``."""
    inputs: dict[str, np.ndarray] = {}
    for name in sorted(request.inputs):
        spec = signature.input(name)
        array = from_tensor_proto(
            request.inputs[name], what=f"input '{name}'", fault=BadRequest, max_elements=max_elements
        )
        datatype = "BYTES" if array.dtype.kind == "O" else datatype_of(array)
        if datatype != spec.datatype:
            raise BadRequest(
                f"input '{name}': expected dtype {tf_dtype_name(spec.datatype)}, got {tf_dtype_name(datatype)}"
            )
        check_shape(spec, array)
        inputs[name] = array
    for spec in signature.inputs:
        if spec.name not in inputs:
            raise BadRequest(f"missing input '{spec.name}'")
    return inputs


def _output_filter(names: Iterable[str], signature: Signature) -> tuple[str, ...]:
    known = {s.name for s in signature.outputs}
    seen: list[str] = []
    for name in names:
        if name not in known:
            raise BadRequest(f"unknown output '{name}' (outputs: {', '.join(sorted(known))})")
        if name in seen:
            raise BadRequest(f"output '{name}' is given more than once in output_filter")
        seen.append(name)
    return tuple(seen)


def _model_spec(spec: pb.ModelSpec, target: Target, signature_name: str | None) -> None:
    spec.name = target.model
    spec.version.value = target.version
    if signature_name is not None:
        spec.signature_name = signature_name


class TFServingService:
    """The methods of both TF Serving services, over the one pipeline."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.PredictResponse:
        return await run(self.services, PROTOCOL, context, lambda call: self._predict(call, request))

    async def _predict(self, call: Call, request: pb.PredictRequest) -> pb.PredictResponse:
        resolved = resolve(call, _params(request.model_spec))
        mark_route(call.state, resolved)
        signature_name = _check_signature_name(request.model_spec)
        target = resolved.target
        signature = require_signature(target, await signature_of(target))
        wanted = _output_filter(request.output_filter, signature)
        limit = self.services.settings.max_body_bytes
        inputs = await call.decode(request.ByteSize(), lambda: decode_inputs(request, signature, limit))
        result = await dispatch(call, None, resolved, InferenceRequest(inputs=inputs, output_filter=wanted))
        assert isinstance(result, InferenceResult)  # an InferenceRequest is answered by infer()
        outputs = result_outputs(result, signature)
        response = pb.PredictResponse()
        _model_spec(response.model_spec, target, signature_name)
        for name in wanted or tuple(outputs):
            if name in outputs:
                to_tensor_proto(outputs[name], response.outputs[name])
        return response

    async def get_model_metadata(
        self, request: pb.GetModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelMetadataResponse:
        return await run(self.services, PROTOCOL, context, lambda call: self._metadata(call, request), measured=False)

    async def _metadata(self, call: Call, request: pb.GetModelMetadataRequest) -> pb.GetModelMetadataResponse:
        if not request.metadata_field:
            raise BadRequest("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise BadRequest(f"Metadata field {field} is not supported")
        params = _params(request.model_spec)
        table = call.services.router.table
        resolved = table.model(params["model"]).stable() if len(params) == 1 else resolve(call, params)
        target = resolved.target
        signature = require_signature(target, await signature_of(target))
        response = pb.GetModelMetadataResponse()
        _model_spec(response.model_spec, target, None)
        signatures = pb.SignatureDefMap()
        signature_def(signature, signatures.signature_def[DEFAULT_SIGNATURE])
        response.metadata["signature_def"].Pack(signatures)
        return response

    async def get_model_status(
        self, request: pb.GetModelStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelStatusResponse:
        return await run(self.services, PROTOCOL, context, lambda call: self._status(call, request), measured=False)

    async def _status(self, call: Call, request: pb.GetModelStatusRequest) -> pb.GetModelStatusResponse:
        params = _params(request.model_spec)
        routes = call.services.router.table.model(params["model"])
        if "version" in params:
            targets = [routes.version(resolve(call, params).target.version)]
        else:  # as TF Serving: a label does not narrow the status to one version
            targets = [routes.versions[v] for v in sorted(routes.versions)]
        response = pb.GetModelStatusResponse()
        for target in targets:
            status = await target.backend.status(target.model, target.version)
            item = response.model_version_status.add(version=target.version)
            known = status.state in pb.ModelVersionStatus.State.keys()  # NOT_FOUND is not a TF Serving state
            item.state = getattr(pb.ModelVersionStatus, status.state if known else "UNKNOWN")
            item.status.error_code = codes.UNKNOWN if status.error else codes.OK
            item.status.error_message = status.error
        return response


def signature_def(signature: Signature, out: tf_pb2.SignatureDef) -> None:
    """Fill ``out`` with ``signature`` as TF Serving describes a predict signature."""

    def infos(specs: tuple[TensorSpec, ...], into: object) -> None:
        for spec in specs:
            info = into[spec.name]  # type: ignore[index]
            info.name = spec.name
            info.dtype = tf_pb2.DataType.Value(tf_dtype_name(spec.datatype))
            for size in spec.shape:
                info.tensor_shape.dim.add(size=size)

    infos(signature.inputs, out.inputs)
    infos(signature.outputs, out.outputs)
    out.method_name = PREDICT_METHOD


def handlers(services: Services) -> list[grpc.GenericRpcHandler]:
    """The generic handlers of both TF Serving services."""
    service = TFServingService(services)

    def unary(method: object, request: type[Message], response: type[Message]) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            method, request_deserializer=request.FromString, response_serializer=response.SerializeToString
        )

    return [
        grpc.method_handlers_generic_handler(
            PREDICTION,
            {
                "Predict": unary(service.predict, pb.PredictRequest, pb.PredictResponse),
                "GetModelMetadata": unary(
                    service.get_model_metadata, pb.GetModelMetadataRequest, pb.GetModelMetadataResponse
                ),
            },
        ),
        grpc.method_handlers_generic_handler(
            MODEL,
            {"GetModelStatus": unary(service.get_model_status, pb.GetModelStatusRequest, pb.GetModelStatusResponse)},
        ),
    ]
