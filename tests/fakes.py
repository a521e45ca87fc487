"""A backend double for unit tests of the protocol layer and router (never used end-to-end).

It multiplies every input by its version, so a test can tell from the numbers which version
answered; it can also be told to fail with a given gateway error.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np

from gateway.core.errors import GatewayError
from gateway.core.restjson import decode_outputs, encode_outputs
from gateway.core.tensors import Signature
from gateway.core.types import (
    InferenceRequest,
    InferenceResult,
    Passthrough,
    Target,
    VersionStatus,
)


class FakeBackend:
    def __init__(self, kind: str, *, raw_passthrough: bool = False) -> None:
        self.kind = kind
        #: Takes bodies as they are (``forward``), as TorchServe does, when ``raw_passthrough``.
        self.passthrough: FakeBackend | None = self if raw_passthrough else None
        self.fail: GatewayError | None = None
        self.fail_versions: set[int] = set()  # empty: fail every version
        self.requests: list[tuple[Target, InferenceRequest]] = []
        self.forwarded: list[tuple[Target, bytes]] = []  # pass-through bodies, in order
        self.started = self.closed = False
        self.unloaded: set[tuple[str, int]] = set()
        self.startup: tuple[dict, dict] | None = None  # what the last write_startup was given
        self.defaults: list[tuple[str, int]] = []  # set_default calls, in order
        #: Scripted answers of status(): each call takes the next one (the last one repeats).
        self.statuses: list[VersionStatus] = []

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    def _outputs(self, target: Target, request: InferenceRequest) -> dict[str, np.ndarray]:
        x = next(iter(request.inputs.values()))
        names = [s.name for s in target.signature.outputs] if target.signature else ["y"]
        if x.dtype.kind in "OSU":
            return {names[0]: x}
        return {names[0]: (x * target.version).astype(x.dtype)}

    async def infer(self, target: Target, request: InferenceRequest) -> InferenceResult:
        self.requests.append((target, request))
        if self.fail and (not self.fail_versions or target.version in self.fail_versions):
            raise self.fail
        outputs = self._outputs(target, request)
        if self.passthrough is not None:  # answers in the REST form, as the TorchServe handler does
            body = encode_outputs(outputs, request.form)
            return InferenceResult(body=body, form=request.form, decode=decode_outputs)
        return InferenceResult(outputs=outputs)

    async def forward(self, target: Target, request: Passthrough) -> InferenceResult:
        self.forwarded.append((target, request.body))
        if self.fail and (not self.fail_versions or target.version in self.fail_versions):
            raise self.fail
        return InferenceResult(
            body=b"echo:" + request.body, form=None, decode=decode_outputs, content_type="text/plain"
        )

    async def signature(self, model: str, version: int) -> Signature | None:
        return None

    async def status(self, model: str, version: int) -> VersionStatus:
        if self.statuses:
            return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if (model, version) in self.unloaded:  # as both servers answer after a restart
            return VersionStatus(version, "NOT_FOUND", f"Could not find version {version} of model {model}")
        return VersionStatus(version, "AVAILABLE")

    async def set_default(self, model: str, version: int) -> None:
        self.defaults.append((model, version))

    async def load(self, model: str, version: int, keep: object) -> None:
        self.unloaded.discard((model, version))

    async def unload(self, model: str, version: int, keep: object) -> None:
        self.unloaded.add((model, version))

    def write_startup(self, keep: Mapping[str, Collection[int]], defaults: Mapping[str, int]) -> bool:
        new = ({m: sorted(v) for m, v in keep.items()}, dict(defaults))
        changed, self.startup = new != self.startup, new
        return changed


def make_version(store: Path, model: str, version: int, kind: str, signature: dict) -> Path:
    path = store / model / str(version)
    path.mkdir(parents=True)
    if kind == "torchserve":
        (path / f"{model}.mar").write_bytes(b"")
    else:
        (path / "saved_model.pb").write_bytes(b"")
    (path / "signature.json").write_text(json.dumps(signature))
    return path


def write_mar(version_dir: Path, model: str, manifest_version: str) -> Path:
    """A minimal model archive in ``version_dir`` whose manifest states ``manifest_version``."""
    version_dir.mkdir(parents=True, exist_ok=True)
    path = version_dir / f"{model}.mar"
    manifest = {"model": {"modelName": model, "modelVersion": manifest_version, "handler": "handler.py"}}
    with zipfile.ZipFile(path, "w") as mar:
        mar.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
    return path
