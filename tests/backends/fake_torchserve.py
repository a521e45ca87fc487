"""A stand-in for TorchServe 0.12's management API, faithful in what the gateway depends on.

Followed from pytorch/serve v0.12.0: ``wlm/ModelVersionedRefs.java`` (versions keyed by the
manifest's exact string; the first registered is the default; the default cannot be removed while
other versions exist), ``wlm/ModelManager.java`` (unregister answers), ``util/ApiUtils.java`` (the
messages) and ``http/HttpRequestHandler.java`` (exception -> status: ModelNotFound and
ModelVersionNotFound 404, InvalidModelVersion 403, Conflict 409).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web


@dataclass
class Versions:
    """One model's ``ModelVersionedRefs``: versions by exact string, and the default."""

    versions: dict[str, str] = field(default_factory=dict)  # version -> archive url
    default: str | None = None


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"code": status, "type": kind, "message": message}, status=status)


class FakeTorchServe:
    """The management routes the gateway calls, over a real HTTP server on loopback."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.models: dict[str, Versions] = {}
        self.calls: list[tuple[str, str]] = []
        #: Statuses the next unregisters answer before working (TorchServe's 500 "Interrupted
        #: while cleaning resources" / 408 "Timed out while cleaning resources").
        self.unregister_failures: list[int] = []
        self.app = web.Application()
        self.app.add_routes(
            [
                web.post("/models", self.register),
                web.get("/models/{model}/{version}", self.describe),
                web.put("/models/{model}/{version}/set-default", self.set_default),
                web.delete("/models/{model}/{version}", self.unregister),
            ]
        )
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def restart(self) -> None:
        """TorchServe restarted: it remembers nothing it was not told at start-up."""
        self.models.clear()

    def default(self, model: str) -> str | None:
        return self.models[model].default if model in self.models else None

    def registered(self, model: str) -> list[str]:
        return sorted(self.models[model].versions) if model in self.models else []

    async def register(self, request: web.Request) -> web.Response:
        url, name = request.query["url"], request.query["model_name"]
        self.calls.append(("POST", f"{name} {url}"))
        archive = self.store / url
        if not archive.is_file():
            return _error(404, "ModelNotFoundException", f"Model not found in model store: {url}")
        with zipfile.ZipFile(archive) as mar:
            version = json.loads(mar.read("MAR-INF/MANIFEST.json"))["model"]["modelVersion"]
        refs = self.models.setdefault(name, Versions())
        if version in refs.versions:
            return _error(
                409, "ConflictStatusException", f"Model version {version} is already registered for model {name}"
            )
        refs.versions[version] = url
        if refs.default is None:
            refs.default = version
        return web.json_response({"status": f'Model "{name}" Version: {version} registered with 1 initial workers'})

    async def describe(self, request: web.Request) -> web.Response:
        model, version = request.match_info["model"], request.match_info["version"]
        refs = self.models.get(model)
        if refs is None:
            return _error(404, "ModelNotFoundException", f"Model not found: {model}")
        wanted = sorted(refs.versions) if version == "all" else [version]
        if version != "all" and version not in refs.versions:
            return _error(
                404, "ModelVersionNotFoundException", f"Model version: {version} does not exist for model: {model}"
            )
        return web.json_response(
            [{"modelName": model, "modelVersion": v, "workers": [{"id": "9000", "status": "READY"}]} for v in wanted]
        )

    async def set_default(self, request: web.Request) -> web.Response:
        model, version = request.match_info["model"], request.match_info["version"]
        self.calls.append(("PUT", f"{model} {version}"))
        refs = self.models.get(model)
        if refs is None:
            return _error(404, "ModelNotFoundException", f"Model not found: {model}")
        if version not in refs.versions:
            return _error(
                404, "ModelVersionNotFoundException", f"Model version {version} does not exist for model {model}"
            )
        refs.default = version
        return web.json_response({"status": f'Default version successfully updated for model "{model}" to "{version}"'})

    async def unregister(self, request: web.Request) -> web.Response:
        model, version = request.match_info["model"], request.match_info["version"]
        self.calls.append(("DELETE", f"{model} {version}"))
        refs = self.models.get(model)
        if refs is None:
            return _error(404, "ModelNotFoundException", f"Model not found: {model}")
        if refs.default == version and len(refs.versions) > 1:
            return _error(403, "InvalidModelVersionException", f"Cannot remove default version for model {model}")
        if version not in refs.versions:
            return _error(
                404, "ModelVersionNotFoundException", f"Model version: {version} does not exist for model: {model}"
            )
        if self.unregister_failures:  # the workers could not be stopped: the version stays
            status = self.unregister_failures.pop(0)
            word = "Interrupted" if status == 500 else "Timed out"
            return _error(status, "InternalServerException", f"{word} while cleaning resources: {model}")
        del refs.versions[version]
        if not refs.versions:
            del self.models[model]
        return web.json_response({"status": f'Model "{model}" unregistered'})
