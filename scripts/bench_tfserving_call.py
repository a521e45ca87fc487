"""CPU per call of the TF Serving adapter against a real local gRPC server, variants side by side.

    PYTHONPATH=. .venv/bin/python scripts/bench_tfserving_call.py [--calls 3000] [--rounds 5] [--clients 1]
        [--uvloop] [--only TEXT ...] [--exact NAME]

A minimal ``grpc.aio`` server answering ``PredictionService/Predict`` with a fixed ``mlp``-shaped
response (``y``: 1x3 float32) runs in a child process, so only the client's work is counted. In this
process each variant makes ``--calls`` calls per round (``--clients`` at a time), the variants taking
turns round after round so that load from other work on the machine falls on all of them alike.
Printed per variant: this process's CPU microseconds per call (all threads, grpc's poller
included; ``time.process_time``), median and best over the rounds, and the median as a ratio to
the first variant (the adapter as it is). ``--exact NAME`` runs one variant alone, for counting
instructions: ``valgrind --tool=callgrind`` at two ``--calls`` counts, the difference over the
difference in calls is the instructions per call (startup and warm-up cancel out).

The ``grpclib`` variants call the same server through grpclib (pure-Python asyncio gRPC over
``h2``) with the same protobuf classes, for comparison only: grpclib is not a dependency of the
gateway. Without it installed they print as unavailable and the other variants run as before.
The adapter as it is makes ``Predict`` over the gateway's lean HTTP/2 client
(``gateway.backends.h2``); ``adapter, Predict over grpc.aio`` is the same adapter with
``predict_client="grpc"``, and the channel-option variants use ``grpc.aio`` too. The ``HTTP/2
client, bytes`` variant is the lean client's bare call, the counterpart of the bare
multicallable with bytes. gRPC runs with the gateway's own defaults
(``gateway.serving.grpc_defaults``), as in the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np

try:  # optional: only the grpclib variants need it
    import grpclib.client as grpclib_client
except ImportError:  # pragma: no cover - depends on the environment
    grpclib_client = None  # type: ignore[assignment]

from gateway.backends import h2
from gateway.backends.tfserving.client import PREDICT, PREDICTION, TFServingBackend
from gateway.backends.tfserving.codec import from_tensor_proto, to_tensor_proto
from gateway.backends.tfserving.protos import serving_pb2 as pb
from gateway.core.types import InferenceRequest, Target
from gateway.serving import grpc_defaults


def fixed_response() -> bytes:
    resp = pb.PredictResponse()
    to_tensor_proto(np.array([[0.1, 0.2, 0.7]], dtype=np.float32), resp.outputs["y"])
    resp.model_spec.name = "mlp"
    resp.model_spec.version.value = 2
    return resp.SerializeToString()


def serve(port: int, ready: Any) -> None:
    """The server process: answers every Predict with the same bytes."""
    answer = fixed_response()

    async def predict(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return answer

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "tensorflow.serving.PredictionService",
            {"Predict": grpc.unary_unary_rpc_method_handler(predict)},
        )
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    asyncio.run(main())


class Fake:
    kind = "tfserving"


class Unavailable(Exception):
    """A variant that cannot run here (a library it needs is not installed)."""


Call = Callable[[], Awaitable[Any]]
Factory = Callable[[], Awaitable[tuple[Call, Callable[[], Awaitable[None]]]]]


def variants(target: str) -> dict[str, Factory]:
    """name -> async factory of a zero-argument coroutine function doing one call."""
    inputs = {"x": np.array([[0.5, -1.0, 0.25, 2.0]], dtype=np.float32)}
    tgt = Target("mlp", 2, Fake())  # type: ignore[arg-type]

    def adapter(client: str = "http2") -> Factory:
        async def make() -> tuple[Call, Any]:
            backend = TFServingBackend(target, predict_client=client)
            await backend.start()

            async def one() -> Any:
                return await backend.infer(tgt, InferenceRequest(inputs=dict(inputs)))

            return one, backend.close

        return make

    def with_options(extra: list[tuple[str, Any]]) -> Factory:
        async def make() -> tuple[Call, Any]:
            backend = TFServingBackend(target, predict_client="grpc")
            backend._options = backend._options + extra
            await backend.start()

            async def one() -> Any:
                return await backend.infer(tgt, InferenceRequest(inputs=dict(inputs)))

            return one, backend.close

        return make

    def raw_channel(options: list[tuple[str, Any]], *, timeout: bool) -> Factory:
        """The bare call: pre-serialised bytes in, bytes out (no codec), the floor of the channel."""

        async def make() -> tuple[Call, Any]:
            channel = grpc.aio.insecure_channel(target, options=options)
            call = channel.unary_unary(PREDICTION + "Predict")
            req = pb.PredictRequest()
            req.model_spec.name = "mlp"
            req.model_spec.version.value = 2
            to_tensor_proto(inputs["x"], req.inputs["x"])
            data = req.SerializeToString()

            async def one() -> Any:
                return await (call(data, timeout=30.0) if timeout else call(data))

            return one, channel.close

        return make

    async def adapter_fresh_request() -> tuple[Call, Any]:
        """The adapter's ``call`` with a request message built anew each call, codec included (grpc.aio)."""
        backend = TFServingBackend(target, predict_client="grpc")
        await backend.start()

        async def one() -> Any:
            req = pb.PredictRequest()
            req.model_spec.name = "mlp"
            req.model_spec.version.value = 2
            to_tensor_proto(inputs["x"], req.inputs["x"])
            return await backend.call("Predict", req, "tfserving mlp v2")

        return one, backend.close

    async def adapter_call_only() -> tuple[Call, Any]:
        """The adapter's ``call`` with a request built once: no codec, no message building (grpc.aio)."""
        backend = TFServingBackend(target, predict_client="grpc")
        await backend.start()
        req = pb.PredictRequest()
        req.model_spec.name = "mlp"
        req.model_spec.version.value = 2
        to_tensor_proto(inputs["x"], req.inputs["x"])

        async def one() -> Any:
            return await backend.call("Predict", req, "tfserving mlp v2")

        return one, backend.close

    def message_call(timeout: bool) -> Factory:
        """The bare multicallable with protobuf (de)serialisers and a request built once."""

        async def make() -> tuple[Call, Any]:
            channel = grpc.aio.insecure_channel(target, options=TFServingBackend(target)._options)
            call = channel.unary_unary(
                PREDICTION + "Predict",
                request_serializer=pb.PredictRequest.SerializeToString,
                response_deserializer=pb.PredictResponse.FromString,
            )
            req = pb.PredictRequest()
            req.model_spec.name = "mlp"
            req.model_spec.version.value = 2
            to_tensor_proto(inputs["x"], req.inputs["x"])

            async def one() -> Any:
                return await (call(req, timeout=30.0) if timeout else call(req))

            return one, channel.close

        return make

    def request() -> pb.PredictRequest:
        """The ``mlp`` request as the adapter builds it, anew."""
        req = pb.PredictRequest()
        req.model_spec.name = "mlp"
        req.model_spec.version.value = 2
        for name, array in inputs.items():
            to_tensor_proto(array, req.inputs[name])
        return req

    async def codec_only() -> tuple[Call, Any]:
        answer = fixed_response()

        async def one() -> Any:
            request().SerializeToString()
            resp = pb.PredictResponse.FromString(answer)
            return {name: from_tensor_proto(t) for name, t in resp.outputs.items()}

        async def close() -> None:
            pass

        return one, close

    def grpclib_call(*, timeout: bool, codec: bool) -> Factory:
        """grpclib's unary call with the same messages; ``codec``: request built and outputs
        decoded each call, the steps of the adapter's ``infer`` without its error mapping."""

        async def make() -> tuple[Call, Any]:
            if grpclib_client is None:
                raise Unavailable("grpclib is not installed (pip install grpclib)")
            host, port = target.rsplit(":", 1)
            channel = grpclib_client.Channel(host, int(port))
            method = grpclib_client.UnaryUnaryMethod(
                channel, PREDICTION + "Predict", pb.PredictRequest, pb.PredictResponse
            )
            built = pb.PredictRequest()
            built.model_spec.name = "mlp"
            built.model_spec.version.value = 2
            to_tensor_proto(inputs["x"], built.inputs["x"])

            async def one() -> Any:
                if not codec:
                    return await (method(built, timeout=30.0) if timeout else method(built))
                req = pb.PredictRequest()
                req.model_spec.name = "mlp"
                req.model_spec.version.value = 2
                for name, array in inputs.items():
                    to_tensor_proto(array, req.inputs[name])
                resp = await method(req, timeout=30.0)
                return {name: from_tensor_proto(t) for name, t in resp.outputs.items()}

            async def close() -> None:
                channel.close()

            return one, close

        return make

    async def h2_bytes() -> tuple[Call, Any]:
        """The lean HTTP/2 client's bare call: pre-serialised bytes in, bytes out, with a deadline."""
        address = h2.parse_target(target)
        assert address is not None
        channel = h2.Channel(*address)
        req = pb.PredictRequest()
        req.model_spec.name = "mlp"
        req.model_spec.version.value = 2
        to_tensor_proto(inputs["x"], req.inputs["x"])
        body = req.SerializeToString()

        async def one() -> Any:
            return await channel.unary(PREDICT, body, 30.0)

        async def close() -> None:
            channel.close()

        return one, close

    base = TFServingBackend(target)._options
    return {
        "adapter as it is": adapter(),
        "adapter, Predict over grpc.aio": adapter("grpc"),
        "+ channelz off": with_options([("grpc.enable_channelz", 0)]),
        "+ minimal_stack": with_options([("grpc.minimal_stack", 1)]),
        "+ tcp read chunk 64K": with_options(
            [
                ("grpc.experimental.tcp_min_read_chunk_size", 65536),
                ("grpc.experimental.tcp_read_chunk_size", 65536),
            ]
        ),
        "+ bdp_probe 0": with_options([("grpc.http2.bdp_probe", 0)]),
        "+ optimization_target latency": with_options([("grpc.optimization_target", "latency")]),
        "+ channelz off, bdp_probe 0, latency": with_options(
            [
                ("grpc.enable_channelz", 0),
                ("grpc.http2.bdp_probe", 0),
                ("grpc.optimization_target", "latency"),
            ]
        ),
        "adapter.call, request built each call": adapter_fresh_request,
        "adapter.call, request built once": adapter_call_only,
        "bare call, messages, timeout": message_call(True),
        "bare call, bytes, timeout": raw_channel(base, timeout=True),
        "bare call, bytes, no timeout": raw_channel(base, timeout=False),
        "codec + protobuf only (no call)": codec_only,
        "grpclib, messages, timeout": grpclib_call(timeout=True, codec=False),
        "grpclib, messages, no timeout": grpclib_call(timeout=False, codec=False),
        "grpclib, infer's steps (request built, outputs decoded), timeout": grpclib_call(timeout=True, codec=True),
        "HTTP/2 client, bytes, timeout": h2_bytes,
    }


async def measure(make: Factory, calls: int, clients: int) -> float:
    one, close = await make()
    for _ in range(200):
        await one()

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    start = time.process_time()
    await asyncio.gather(*(worker(calls // clients) for _ in range(clients)))
    spent = time.process_time() - start
    await close()
    return spent / (calls // clients * clients) * 1e6


async def run(args: argparse.Namespace, port: int) -> None:
    table = variants(f"127.0.0.1:{port}")
    if args.exact:
        table = {args.exact: table[args.exact]}
    elif args.only:
        table = {k: v for k, v in table.items() if k == "adapter as it is" or any(o in k for o in args.only)}
    results: dict[str, list[float]] = {name: [] for name in table}
    missing: dict[str, str] = {}
    names = list(table)
    for r in range(args.rounds):
        # each round starts at another variant, so no variant always follows the same one
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if name in missing:
                continue
            try:
                results[name].append(await measure(table[name], args.calls, args.clients))
            except Unavailable as exc:
                missing[name] = str(exc)
    measured = [values for values in results.values() if values]
    first = statistics.median(measured[0]) if measured else 1.0
    print("| variant | CPU µs/call, median | best | ratio to the adapter (median) |")
    print("|---|---|---|---|")
    for name, values in results.items():
        if name in missing:
            print(f"| {name} | unavailable: {missing[name]} | | |")
            continue
        med = statistics.median(values)
        print(f"| {name} | {med:.1f} | {min(values):.1f} | {med / first:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--port", type=int, default=18591)
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--exact", help="run only the variant of this exact name (for callgrind)")
    args = parser.parse_args()
    grpc_defaults()  # before any channel: the grpc the gateway runs (its children inherit it)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    server = ctx.Process(target=serve, args=(args.port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise SystemExit("server did not start")
        if args.uvloop:
            import uvloop

            uvloop.run(run(args, args.port))
        else:
            asyncio.run(run(args, args.port))
    finally:
        server.terminate()
        server.join()


if __name__ == "__main__":
    main()
