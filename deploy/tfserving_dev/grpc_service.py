"""PredictionService and ModelService on the official tensorflow-serving-api stubs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from .errors import ServingError, from_exception, invalid_argument
from .metrics import ServingMetrics
from .servable import DEFAULT_SIGNATURE
from .server_core import ServerCore
from .tensors import array_to_proto, proto_to_array

log = logging.getLogger("tfserving_dev.grpc")

SIGNATURE_DEF_FIELD = "signature_def"
_MAX_MESSAGE_BYTES = 2**31 - 1  # TF Serving sets the gRPC max message size to INT_MAX

Response = TypeVar("Response")


def _answer(context: grpc.ServicerContext, call: Callable[[], Response], empty: Response) -> Response:
    """Run a handler; turn any exception into a gRPC status, never crash the server."""
    try:
        return call()
    except Exception as exc:
        error = from_exception(exc)
        if not isinstance(exc, ServingError):
            log.exception("Unexpected error while handling a request")
        context.set_code(error.code)
        context.set_details(error.message)
        return empty


def _unimplemented(context: grpc.ServicerContext, method: str) -> None:
    context.set_code(grpc.StatusCode.UNIMPLEMENTED)
    context.set_details(f"{method} is not implemented by the tfserving_dev development server")
    return None


def predict(
    manager: ServerCore, metrics: ServingMetrics, request: predict_pb2.PredictRequest
) -> predict_pb2.PredictResponse:
    """PredictionService.Predict, as TF Serving's TensorflowPredictor runs it."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    servable, version = manager.resolve(request.model_spec)
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    servable.signature(signature_name)  # FAILED_PRECONDITION before input errors, as TF Serving
    inputs = {alias: proto_to_array(alias, t) for alias, t in request.inputs.items()}
    outputs, runtime_us = servable.run(signature_name, inputs, list(request.output_filter))
    metrics.record_runtime_latency(request.model_spec.name, "Predict", "TF1", runtime_us)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = version
    response.model_spec.signature_name = signature_name
    for alias, array in outputs.items():
        response.outputs[alias].CopyFrom(array_to_proto(array))
    return response


def model_metadata(
    manager: ServerCore, request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadataImpl: only the signature_def field exists."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    if not request.metadata_field:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise invalid_argument(f"Metadata field {field} is not supported")
    servable, version = manager.resolve(request.model_spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(servable.signature_def_map())
    return response


def model_status(
    manager: ServerCore, request: get_model_status_pb2.GetModelStatusRequest
) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatusImpl: a version label in the spec is ignored, as in TF Serving."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    spec = request.model_spec
    version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
    response = get_model_status_pb2.GetModelStatusResponse()
    for item in manager.status(spec.name, version):
        entry = response.model_version_status.add(version=item.version, state=item.state)
        entry.status.error_code = item.error_code.value[0]
        entry.status.error_message = item.error_message
    return response


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    """tensorflow.serving.PredictionService: Predict and GetModelMetadata."""

    def __init__(self, manager: ServerCore, metrics: ServingMetrics) -> None:
        self._manager = manager
        self._metrics = metrics

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        response = _answer(
            context,
            lambda: predict(self._manager, self._metrics, request),
            predict_pb2.PredictResponse(),
        )
        code = context.code() or grpc.StatusCode.OK
        name = request.model_spec.name
        if code == grpc.StatusCode.OK:
            elapsed_us = (time.perf_counter() - start) * 1e6
            self._metrics.record_request_latency(name, "Predict", "GRPC", elapsed_us)
        self._metrics.record_request(name, code)
        return response

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _answer(
            context,
            lambda: model_metadata(self._manager, request),
            get_model_metadata_pb2.GetModelMetadataResponse(),
        )

    # Classify/Regress/MultiInference take tf.Example inputs, which the project never uses.
    # The generated base methods would raise, which gRPC turns into UNKNOWN plus a traceback.
    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _unimplemented(context, "Classify")

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _unimplemented(context, "Regress")

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _unimplemented(context, "MultiInference")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    """tensorflow.serving.ModelService: GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, manager: ServerCore) -> None:
        self._manager = manager

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _answer(
            context,
            lambda: model_status(self._manager, request),
            get_model_status_pb2.GetModelStatusResponse(),
        )

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
        response = model_management_pb2.ReloadConfigResponse()
        try:
            # model_service_impl.cc: anything but a model list, "no config" included, is refused.
            if request.config.WhichOneof("config") != "model_config_list":
                raise invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest."
                    " Only ModelConfigList is currently supported"
                )
            log.info("Reloading config: %d model(s)", len(request.config.model_config_list.config))
            self._manager.reload_config(request.config)
        except Exception as exc:
            error = from_exception(exc)
            log.error("ReloadConfig failed: %s", error)
            # TF Serving fills response.status and also returns the error as the gRPC status
            # (which means clients only ever see the latter).
            response.status.error_code = error.code.value[0]
            response.status.error_message = error.message
            context.set_code(error.code)
            context.set_details(error.message)
        return response


def create_server(manager: ServerCore, metrics: ServingMetrics, host: str, port: int) -> tuple[grpc.Server, int]:
    """Build and start the gRPC server; returns it and the bound port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="tfs-grpc"),
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            # Refuse a second server on the same port instead of silently sharing it.
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(manager, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    server.start()
    return server, bound
