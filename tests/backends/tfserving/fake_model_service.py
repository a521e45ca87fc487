"""A scripted TF Serving ``ModelService`` over a real ``grpc.aio`` server, with the gateway's lean
protos: the answers and blocking of the real one (tensorflow/serving 2.20,
``model_servers/model_service_impl.cc``, ``server_core.cc``, ``get_model_status_impl.cc``).

- GetModelStatus of a version the server does not know: NOT_FOUND "Could not find version V of
  model M"; otherwise the scripted states, in order (the last one repeats).
- HandleReloadConfigRequest without a ``model_config_list``: INVALID_ARGUMENT with the real text.
  Reloads run one at a time under a config lock; one that adds a model blocks while ``hold`` is
  clear (the real server waits for the new model's versions to load, with no timeout).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from gateway.backends.tfserving.protos import serving_pb2 as pb

NO_LIST = (
    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently supported"
)


class FakeModelService:
    def __init__(self) -> None:
        self.states: dict[tuple[str, int], list[tuple[str, str]]] = {}
        self.configs: list[pb.ReloadConfigRequest] = []  # every reload received, on arrival
        self.not_found = 0  # GetModelStatus calls answered NOT_FOUND
        self.hold = asyncio.Event()
        self.hold.set()
        self._config_mu = asyncio.Lock()
        self._models: set[str] = set()
        self._arrived = asyncio.Condition()
        self._server: grpc.aio.Server | None = None
        self.target = ""

    def script(self, model: str, version: int, *states: tuple[str, str]) -> None:
        """What GetModelStatus answers for the version from now on: (state, error message) each."""
        self.states[(model, version)] = list(states)

    async def start(self) -> None:
        handlers = {
            "GetModelStatus": grpc.unary_unary_rpc_method_handler(
                self.get_model_status,
                request_deserializer=pb.GetModelStatusRequest.FromString,
                response_serializer=pb.GetModelStatusResponse.SerializeToString,
            ),
            "HandleReloadConfigRequest": grpc.unary_unary_rpc_method_handler(
                self.reload,
                request_deserializer=pb.ReloadConfigRequest.FromString,
                response_serializer=pb.ReloadConfigResponse.SerializeToString,
            ),
        }
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("tensorflow.serving.ModelService", handlers),)
        )
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self.target = f"127.0.0.1:{port}"

    async def stop(self) -> None:
        self.hold.set()
        if self._server is not None:
            await self._server.stop(None)

    async def arrived(self, count: int) -> None:
        """Wait until ``count`` reloads reached the server."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.configs) >= count)

    async def answered_not_found(self, count: int) -> None:
        """Wait until ``count`` status calls were answered NOT_FOUND."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: self.not_found >= count)

    async def get_model_status(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        key = (request.model_spec.name, request.model_spec.version.value)
        script = self.states.get(key)
        if not script:
            async with self._arrived:
                self.not_found += 1
                self._arrived.notify_all()
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Could not find version {key[1]} of model {key[0]}")
        state, error = script.pop(0) if len(script) > 1 else script[0]
        answer = pb.GetModelStatusResponse()
        item = answer.model_version_status.add(version=key[1], state=pb.ModelVersionStatus.State.Value(state))
        if error:
            item.status.error_code = 2  # UNKNOWN, as a failed load reports
            item.status.error_message = error
        return answer

    async def reload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with self._arrived:
            self.configs.append(request)
            self._arrived.notify_all()
        if request.config.WhichOneof("config") != "model_config_list":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, NO_LIST)
        async with self._config_mu:
            names = {c.name for c in request.config.model_config_list.config}
            if names - self._models:
                await self.hold.wait()
            self._models = names
        return pb.ReloadConfigResponse()
