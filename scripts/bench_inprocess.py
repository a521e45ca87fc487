"""In-process data-plane cost: the gateway's own work per inference request, no sockets.

    .venv/bin/python scripts/bench_inprocess.py [--requests 3000] [--warmup 200] [--repeats 5] [--only cnn]

Builds the app around no-op backends (they answer at once), then calls it as an ASGI app, one
request at a time, for each protocol's front door on the ``mlp`` shape (4 floats in, 3 out), and
for the Open Inference Protocol on the ``cnn`` shape (3x32x32 floats in, 10 out a row) as JSON and
in the binary tensor data form (``--only`` keeps the routes whose name holds its text). What
is timed is everything the gateway does for a request: routing, decode, dispatch, encode, metrics.
Prints, per route, the mean CPU microseconds per request of the best and the median of ``--repeats``
runs (the best run is the least disturbed by other work on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gateway.app import create_app
from gateway.core.restjson import decode_outputs
from gateway.core.tensors import Signature
from gateway.core.types import InferenceRequest, InferenceResult, Passthrough, Target, VersionStatus
from gateway.registry import RegistryStore
from gateway.settings import Settings
from loadgen.bodies import oip_bodies

SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
}
ROW = json.dumps({"instances": [[0.5, -1.0, 0.25, 2.0]]}).encode()
X = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0.5, -1.0, 0.25, 2.0]}
V2 = json.dumps({"inputs": [X]}).encode()
CNN = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
}


def cnn_bodies(batch: int) -> tuple[tuple[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]:
    """A ``cnn`` request of ``batch`` images as JSON, and in the binary form (binary answer too)."""
    bodies = oip_bodies(np.random.default_rng(batch).normal(size=(batch, 3, 32, 32)).astype(np.float32))
    return bodies["JSON"], bodies["binary"]


(CNN1_JSON, CNN1_BINARY), (CNN8_JSON, CNN8_BINARY) = cnn_bodies(1), cnn_bodies(8)
CASES: list[tuple[str, str, tuple[bytes, dict[str, str]]]] = [
    ("v1 predict (TF Serving version)", "/v1/models/mlp/versions/2:predict", (ROW, {})),
    ("v1 predict (default: TorchServe)", "/v1/models/mlp:predict", (ROW, {})),
    ("v2 infer (TF Serving version)", "/v2/models/mlp/versions/2/infer", (V2, {})),
    ("/predictions pass-through (TorchServe)", "/predictions/mlp/1", (ROW, {})),
    ("v2 infer cnn, 1 image, JSON", "/v2/models/cnn/versions/2/infer", CNN1_JSON),
    ("v2 infer cnn, 1 image, binary", "/v2/models/cnn/versions/2/infer", CNN1_BINARY),
    ("v2 infer cnn, 8 images, JSON", "/v2/models/cnn/versions/2/infer", CNN8_JSON),
    ("v2 infer cnn, 8 images, binary", "/v2/models/cnn/versions/2/infer", CNN8_BINARY),
]


class NoopBackend:
    """Answers every call at once with a fixed output."""

    def __init__(self, kind: str, raw: bool) -> None:
        self.kind = kind
        self.passthrough = self if raw else None
        self.y = np.zeros((1, 3), dtype=np.float32)

    async def infer(self, target: Target, request: InferenceRequest) -> InferenceResult:
        if target.model == "cnn":
            return InferenceResult(outputs={"logits": np.zeros((len(request.inputs["x"]), 10), np.float32)})
        return InferenceResult(outputs={"y": self.y})

    async def forward(self, target: Target, request: Passthrough) -> InferenceResult:
        return InferenceResult(body=b'{"predictions": [[0.0, 0.0, 0.0]]}', form=None, decode=decode_outputs)

    async def signature(self, model: str, version: int) -> Signature | None:
        return None

    async def status(self, model: str, version: int) -> VersionStatus:
        return VersionStatus(version, "AVAILABLE")

    async def load(self, model: str, version: int, keep: Mapping[str, Collection[int]]) -> None: ...
    async def unload(self, model: str, version: int, keep: Mapping[str, Collection[int]]) -> None: ...
    def write_startup(self, keep: Mapping[str, Collection[int]], defaults: Mapping[str, int]) -> bool:
        return False

    async def set_default(self, model: str, version: int) -> None: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


async def call(app: Any, path: str, request: tuple[bytes, dict[str, str]], answer: list[bytes] | None = None) -> int:
    body, extra = request
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in
                    {"content-type": "application/json", **{k.lower(): v for k, v in extra.items()},
                     "content-length": str(len(body))}.items()],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif answer is not None:
            answer.append(message.get("body", b""))

    await app(scope, receive, send)
    return status


def register_replicas(url: str, count: int) -> None:
    """``count`` agent-run replicas of each stack in the registry, each with every version ready."""
    registry = RegistryStore(url)
    registry.migrate()
    for stack in ("torchserve", "tfserving"):
        version = 1 if stack == "torchserve" else 2
        for number in range(count):
            rid = f"{stack}-{number}"
            registry.register_replica(rid, stack, f"http://127.0.0.1:{9000 + number}", "bench")
            for model in ("mlp", "cnn"):
                registry.report_version(rid, model, version, "ready")
    registry.close()


async def run(args: argparse.Namespace, store: Path) -> None:
    url = f"sqlite:///{store.parent / 'registry.db'}"
    settings = Settings(
        model_store=store,
        database_url=url,
        state_file=store.parent / "state.yaml",
        grpc_port=0,  # REST front doors only: no port to bind, none to collide with a running stack
        artifact_store_dir=store.parent / "artifacts",
        agent_stacks="torchserve,tfserving" if args.replicas else "",
    )
    backends = {"torchserve": NoopBackend("torchserve", True), "tfserving": NoopBackend("tfserving", False)}
    if args.replicas:  # the stacks routed over agent-run replicas, each replica's adapter a no-op one
        register_replicas(url, args.replicas)
        adapter = lambda stack, _address: NoopBackend(stack, stack == "torchserve")  # noqa: E731
        app = create_app(settings, backends=backends, replica_adapter=adapter)  # type: ignore[arg-type]
    else:
        app = create_app(settings, backends=backends)  # type: ignore[arg-type]
    async with app.router.lifespan_context(app):
        if args.replicas:  # until the pool has read the replica table and routes over it
            for _ in range(150):
                if await call(app, CASES[1][1], CASES[1][2]) == 200:
                    break
                await asyncio.sleep(0.2)
        print("| route | us per request, best run | median run | runs |")
        print("|---|---|---|---|")
        for name, path, body in CASES:
            if args.only not in name:
                continue
            answer: list[bytes] = []
            assert await call(app, path, body, answer) == 200, (path, b"".join(answer)[:500])
            for _ in range(args.warmup):
                await call(app, path, body)
            runs = []
            for _ in range(args.repeats):
                start = time.process_time()  # this process's CPU time: other processes' load stays out
                for _ in range(args.requests):
                    await call(app, path, body)
                runs.append((time.process_time() - start) / args.requests * 1e6)
            each = ", ".join(f"{r:.0f}" for r in runs)
            print(f"| {name} | {min(runs):.1f} | {statistics.median(runs):.1f} | {each} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help="run the routes whose name holds this text")
    parser.add_argument("--replicas", type=int, default=0,
                        help="route both stacks over this many agent-run replicas each (no-op adapters)")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        for model, signature in (("mlp", SIGNATURE), ("cnn", CNN)):
            for version, kind in ((1, "torchserve"), (2, "tfserving")):
                path = store / model / str(version)
                path.mkdir(parents=True)
                (path / (f"{model}.mar" if kind == "torchserve" else "saved_model.pb")).write_bytes(b"")
                (path / "signature.json").write_text(json.dumps(signature))
        (Path(tmp) / "state.yaml").write_text("models:\n  mlp:\n    labels:\n      stable: 1\n")
        asyncio.run(run(args, store))


if __name__ == "__main__":
    main()
