"""TF Serving adapter: gRPC ``PredictionService`` and ``ModelService`` over one ``grpc.aio`` channel,
and ``Predict``, the hot call, over the lean HTTP/2 client on the event loop (``gateway.backends.h2``;
``predict_client="grpc"`` keeps it on ``grpc.aio`` too).

The messages come from the gateway's own lean protos (``protos/``), so the gateway never imports
TensorFlow. gRPC status codes are translated into the gateway's errors in one table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Final

import grpc
from google.protobuf import text_format
from google.protobuf.message import Message

from gateway.backends import h2
from gateway.backends.deadline import within
from gateway.backends.resilience import RetryBudget
from gateway.backends.scrub import scrub
from gateway.backends.startup import write_if_changed
from gateway.backends.tfserving.codec import TF_TO_DATATYPE, from_tensor_proto, to_tensor_proto
from gateway.backends.tfserving.protos import serving_pb2 as pb
from gateway.core.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BackendUnreached,
    BadRequest,
    GatewayError,
    NotFound,
    VersionMissing,
)
from gateway.core.kinds import Kind
from gateway.core.tensors import Signature, TensorSpec
from gateway.core.types import (
    InferenceRequest,
    InferenceResult,
    Target,
    VersionStatus,
)

log = logging.getLogger(__name__)

KIND: Final[Kind] = "tfserving"
PREDICTION = "/tensorflow.serving.PredictionService/"
MODEL = "/tensorflow.serving.ModelService/"
PREDICT = PREDICTION + "Predict"
#: The clients ``Predict`` can go over: the lean HTTP/2 one, or ``grpc.aio`` like every other call.
PREDICT_CLIENTS: Final = ("http2", "grpc")

#: gRPC status -> gateway error class (the one table).
_GRPC_ERRORS: dict[grpc.StatusCode, type[GatewayError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: BadRequest,
    grpc.StatusCode.FAILED_PRECONDITION: BadRequest,
    grpc.StatusCode.OUT_OF_RANGE: BadRequest,
    grpc.StatusCode.NOT_FOUND: VersionMissing,
    grpc.StatusCode.DEADLINE_EXCEEDED: BackendTimeout,
    grpc.StatusCode.UNAVAILABLE: BackendUnavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: BackendUnavailable,
    grpc.StatusCode.CANCELLED: BackendUnavailable,
}


def never_sent(exc: grpc.aio.AioRpcError) -> bool:
    """UNAVAILABLE from a channel that could not connect: the call never reached the server."""
    if isinstance(exc, h2.RpcError):
        return exc.unsent
    return exc.code() == grpc.StatusCode.UNAVAILABLE and "connect" in (exc.details() or "").lower()


def error_for_rpc(exc: grpc.aio.AioRpcError, what: str) -> GatewayError:
    """Translate a failed gRPC call into the gateway's error.

    An input error keeps the server's message as it is (it tells the client what to fix); any
    other keeps it with addresses scrubbed (gRPC's details name peers: ``ipv4:10.0.3.7:8500``),
    and the log gets the whole of it.
    """
    cls = _GRPC_ERRORS.get(exc.code(), BackendError)
    code = exc.code().name
    server = exc.details() or code
    if cls is BadRequest:
        return BadRequest(f"input rejected by {what}: {server}")
    detail = f"{what}: {code}: {server}"
    if cls is BackendTimeout:
        return BackendTimeout(f"{what}: no answer within the deadline", detail=detail)
    if cls is BackendUnavailable:
        if never_sent(exc):
            return BackendUnreached(f"{what}: unavailable ({code}): {scrub(server)}", detail=detail)
        return BackendUnavailable(f"{what}: unavailable ({code}): {scrub(server)}", detail=detail)
    return cls(f"{what}: {scrub(server)} ({code})", detail=detail)


class SavedModelArtifacts:
    """TF Serving's artifacts: a version directory holds a SavedModel (``saved_model.pb``), which
    states no version of its own: the directory's name is the version."""

    kind: Kind = KIND
    platform = "tensorflow_savedmodel"
    server = "TF Serving"

    def recognises(self, directory: Path) -> bool:
        """True when ``directory`` holds a ``saved_model.pb``."""
        return (directory / "saved_model.pb").is_file()

    def stated_version(self, directory: Path) -> str | None:
        """None: a SavedModel is versioned by its directory's name."""
        return None

    def rebuild_hint(self, version: int) -> str:
        """Where the SavedModel goes for ``version``."""
        return f"place the SavedModel in a directory named {version}"


ARTIFACTS: Final = SavedModelArtifacts()
"""TF Serving's artifact description (see ``gateway.core.kinds.Artifacts``)."""


class TFServingBackend:
    """Calls TF Serving's gRPC API, always naming an explicit version."""

    kind: Kind = KIND
    #: TF Serving takes decoded requests only (tensors over gRPC), never a caller's body as it is.
    passthrough: None = None

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 30.0,
        max_message_bytes: int = 64 << 20,
        base_path: str | None = None,
        load_timeout: float = 300.0,
        retry_ratio: float = 0.1,
        config_file: Path | None = None,
        predict_client: str = "http2",
    ) -> None:
        if predict_client not in PREDICT_CLIENTS:
            raise ValueError(f"predict_client must be one of {', '.join(PREDICT_CLIENTS)}, not {predict_client!r}")
        self.predict_client = predict_client
        self.max_message_bytes = max_message_bytes
        self._h2: h2.Channel | None = None
        self.config_file = config_file
        self.retries = RetryBudget(retry_ratio)
        self.base_path = base_path.rstrip("/") if base_path else None
        self.load_timeout = load_timeout
        self.target = target
        self.timeout = timeout
        self._options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.enable_retries", 0),
        ]
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict[str, Any] = {}
        #: A load whose reload passed its deadline, (model, version), and until when it counts:
        #: the server may still be inside that reload, holding its config lock.
        self._stuck: tuple[str, int] | None = None
        self._stuck_until = 0.0
        #: The model list to send once the stuck reload finished (an unload asked meanwhile).
        self._deferred: dict[str, set[int]] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._sending = asyncio.Lock()  # one reload in flight from this process at a time
        #: Seconds between checks of a stuck reload's version.
        self.busy_poll_seconds = 1.0

    async def start(self) -> None:
        if self._channel is not None:
            return
        self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
        for service, name, request, response in (
            (PREDICTION, "Predict", pb.PredictRequest, pb.PredictResponse),
            (
                PREDICTION,
                "GetModelMetadata",
                pb.GetModelMetadataRequest,
                pb.GetModelMetadataResponse,
            ),
            (MODEL, "GetModelStatus", pb.GetModelStatusRequest, pb.GetModelStatusResponse),
            (MODEL, "HandleReloadConfigRequest", pb.ReloadConfigRequest, pb.ReloadConfigResponse),
        ):
            self._calls[name] = self._channel.unary_unary(
                service + name,
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            )
        address = h2.parse_target(self.target) if self.predict_client == "http2" else None
        if address is not None:
            self._h2 = h2.Channel(*address, max_message_bytes=self.max_message_bytes)
            self._calls["Predict"] = self._predict
        elif self.predict_client == "http2":
            log.info("tfserving %s: Predict over grpc.aio (the HTTP/2 client takes one host:port)", self.target)

    async def _predict(self, request: pb.PredictRequest, timeout: float) -> pb.PredictResponse:  # noqa: ASYNC109
        """``Predict`` over the lean HTTP/2 client, called as the ``grpc.aio`` multicallable is."""
        assert self._h2 is not None
        return pb.PredictResponse.FromString(await self._h2.unary(PREDICT, request.SerializeToString(), timeout))

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if self._h2 is not None:
            self._h2.close()
            self._h2 = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def call(self, method: str, request: Message, what: str, deadline: float | None = None) -> Any:
        """Call one RPC by name with a deadline; failures become the gateway's errors."""
        if self._channel is None:
            raise BackendUnavailable("tfserving adapter is not started")
        self.retries.earn()
        for attempt in (1, 2):
            try:
                return await self._calls[method](request, timeout=within(deadline or self.timeout))
            except grpc.aio.AioRpcError as exc:
                # UNAVAILABLE from a channel that could not connect: the call never started, so
                # one retry is safe, within the budget (a new connection attempt).
                if attempt == 1 and never_sent(exc) and self.retries.spend():
                    log.info("%s: %s; retrying once", what, exc.details())
                    continue
                raise error_for_rpc(exc, what) from exc
        raise AssertionError("unreachable")

    async def infer(self, target: Target, request: InferenceRequest) -> InferenceResult:
        req = pb.PredictRequest()
        req.model_spec.name = target.model
        req.model_spec.version.value = target.version
        for name, array in request.inputs.items():
            to_tensor_proto(array, req.inputs[name])
        req.output_filter.extend(request.output_filter)
        resp = await self.call("Predict", req, f"tfserving {target.model} v{target.version}")
        outputs = {name: from_tensor_proto(t) for name, t in resp.outputs.items()}
        if target.signature is not None:  # answer in the signature's order, as TF Serving's REST does
            order = [s.name for s in target.signature.outputs if s.name in outputs]
            outputs = {n: outputs[n] for n in order} | outputs
        return InferenceResult(outputs=outputs)

    async def signature(self, model: str, version: int) -> Signature | None:
        req = pb.GetModelMetadataRequest(metadata_field=["signature_def"])
        req.model_spec.name = model
        req.model_spec.version.value = version
        resp = await self.call("GetModelMetadata", req, f"tfserving {model} v{version}")
        sig_map = pb.SignatureDefMap()
        if not resp.metadata["signature_def"].Unpack(sig_map):
            raise BackendError(f"tfserving {model} v{version}: metadata has no signature_def map")
        if "serving_default" not in sig_map.signature_def:
            raise NotFound(f"model '{model}' version {version} has no 'serving_default' signature")
        sig = sig_map.signature_def["serving_default"]

        def specs(infos: Any) -> tuple[TensorSpec, ...]:
            return tuple(
                TensorSpec(
                    name,
                    TF_TO_DATATYPE.get(info.dtype, "BYTES"),
                    tuple(d.size for d in info.tensor_shape.dim),
                )
                for name, info in sorted(infos.items())
            )

        return Signature(specs(sig.inputs), specs(sig.outputs))

    def model_server_config(self, keep: Mapping[str, Collection[int]]) -> pb.ReloadConfigRequest:
        """The whole model list TF Serving should serve: each model with a ``specific`` policy.

        ``specific`` matters: a model's directory also holds versions of the other stack, which
        TF Serving must not try to load, and versions still in use must stay loaded.
        """
        if self.base_path is None:
            raise BackendUnavailable("tfserving adapter has no model base path configured")
        request = pb.ReloadConfigRequest()
        # Set explicitly, so that an empty list is still a ModelConfigList: with no config at all
        # (the oneof unset) both servers answer INVALID_ARGUMENT.
        request.config.model_config_list.SetInParent()
        configs = request.config.model_config_list.config
        for model, versions in sorted(keep.items()):
            if not versions:
                continue
            config = configs.add(name=model, base_path=f"{self.base_path}/{model}", model_platform="tensorflow")
            config.model_version_policy.specific.versions.extend(sorted(versions))
        return request

    def write_startup(self, keep: Mapping[str, Collection[int]], defaults: Mapping[str, int]) -> bool:
        """Write TF Serving's ``--model_config_file`` (text format): the same model list the
        gateway's reloads send, so a restarted TF Serving loads exactly the registry's versions.
        With nothing to serve it is an empty ``model_config_list``, which TF Serving accepts."""
        if self.config_file is None:
            return False
        config = self.model_server_config(keep).config
        config.model_config_list.SetInParent()
        return write_if_changed(self.config_file, text_format.MessageToString(config))

    async def _reload(self, keep: Mapping[str, Collection[int]] | None, what: str) -> bool:
        """Send one reload of ``keep`` (None: the deferred model list, if any is left); True if sent."""
        async with self._sending:
            if keep is None:
                keep = self._deferred
                if keep is None:
                    return False
            request = self.model_server_config(keep)
            self._deferred = None  # this list is newer than any deferred one
            response = await self.call("HandleReloadConfigRequest", request, what, self.load_timeout)
        if response.status.error_code != 0:
            raise BackendError(f"{what}: {response.status.error_message}")
        return True

    async def _busy(self) -> str | None:
        """Why no reload should be sent now (an earlier one may still hold the lock), or None."""
        if self._stuck is None:
            return None
        model, version = self._stuck
        status = await self.status(model, version)
        # Until the stuck load's version leaves these states, its reload has not returned.
        if status.state in ("START", "LOADING", "NOT_FOUND", "UNKNOWN") and time.monotonic() < self._stuck_until:
            return f"an earlier reload that timed out is still loading {model} v{version} ({status.state})"
        self._stuck = None
        return None

    async def load(self, model: str, version: int, keep: Mapping[str, Collection[int]]) -> None:
        """Reload TF Serving's config with ``version`` added to what must stay loaded."""
        what = f"tfserving load {model} v{version}"
        if reason := await self._busy():
            raise BackendUnavailable(f"{what}: not sent: {reason}; try again once it finished")
        wanted = {m: set(v) for m, v in keep.items()}
        wanted.setdefault(model, set()).add(version)
        try:
            await self._reload(wanted, what)
        except BackendTimeout:
            # The server goes on with it (and holds its config lock) after our deadline.
            self._stuck = (model, version)
            self._stuck_until = time.monotonic() + self.load_timeout
            raise

    async def unload(self, model: str, version: int, keep: Mapping[str, Collection[int]]) -> None:
        """Reload TF Serving's config without ``version``.

        While an earlier reload may still hold the server's config lock, the new model list is
        kept and sent once that reload finished (and this raises, saying so).
        """
        what = f"tfserving unload {model} v{version}"
        wanted = {m: set(v) for m, v in keep.items()}
        wanted.get(model, set()).discard(version)
        if reason := await self._busy():
            self._deferred = wanted
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush_when_free())
            raise BackendUnavailable(f"{what}: deferred until it finished: {reason}")
        await self._reload(wanted, what)

    async def _flush_when_free(self) -> None:
        """Send the deferred model list once the stuck reload finished (bounded by its expiry)."""
        # The server reports nothing when a reload ends: its version's state is polled.
        while await self._busy():  # noqa: ASYNC110
            await asyncio.sleep(self.busy_poll_seconds)
        try:
            if await self._reload(None, "tfserving deferred unload"):
                log.info("tfserving: the deferred model list was sent")
        except GatewayError as exc:
            log.warning("tfserving: the deferred unload failed: %s", exc.message)

    async def set_default(self, model: str, version: int) -> None:
        """TF Serving has no default version of its own to move: nothing to do."""

    async def status(self, model: str, version: int) -> VersionStatus:
        req = pb.GetModelStatusRequest()
        req.model_spec.name = model
        req.model_spec.version.value = version
        try:
            resp = await self.call("GetModelStatus", req, f"tfserving {model} v{version}", 5.0)
        except GatewayError as exc:
            cause = exc.__cause__
            if isinstance(cause, grpc.aio.AioRpcError) and cause.code() == grpc.StatusCode.NOT_FOUND:
                # "Could not find version 3 of model mlp": never loaded, forgotten, or not yet
                # discovered after a reload; not END, which the server reports once done with it.
                return VersionStatus(version, "NOT_FOUND", cause.details() or "")
            return VersionStatus(version, "UNKNOWN", exc.message)
        for item in resp.model_version_status:
            if item.version == version:
                return VersionStatus(
                    version,
                    pb.ModelVersionStatus.State.Name(item.state),
                    item.status.error_message,
                )
        return VersionStatus(version, "UNKNOWN", "version not reported by TF Serving")
