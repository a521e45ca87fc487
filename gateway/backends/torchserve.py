"""TorchServe adapter: its REST inference API over a pooled keep-alive HTTP client.

Inference calls go through the lean HTTP/1.1 client of ``gateway.backends.http1`` (an ``http://``
URL; ``https://`` keeps aiohttp): measured on the same calls it costs about a third of aiohttp's
CPU per request (scripts/bench_http_client.py). The management API stays on aiohttp, which was
chosen over httpx: a minimal Starlette + aiohttp proxy added about 0.8 ms to a TorchServe call at
the median, a FastAPI + httpx one 1.8-2.9 ms (docs/benchmarks.md has the gateway's own numbers).
The adapter stays thin so that another PyTorch serving stack could take TorchServe's place.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from gateway.backends import http1
from gateway.backends.deadline import DEADLINE, within
from gateway.backends.mar import KIND
from gateway.backends.resilience import RetryBudget
from gateway.backends.scrub import scrub
from gateway.backends.startup import write_if_changed
from gateway.core.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BackendUnreached,
    BadRequest,
    GatewayError,
    VersionMissing,
)
from gateway.core.kinds import Kind
from gateway.core.restjson import decode_outputs, encode_inputs_column
from gateway.core.tensors import Signature
from gateway.core.types import (
    InferenceRequest,
    InferenceResult,
    Passthrough,
    Target,
    VersionStatus,
    version_number,
)

log = logging.getLogger(__name__)

#: DELETE attempts when TorchServe could not stop a version's workers (it asks to resend).
UNREGISTER_ATTEMPTS = 3


def _message(body: bytes) -> str:
    """The error text of a TorchServe answer: its ``message``, a handler's ``error``, or the body."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace").strip()[:500]
    if isinstance(payload, dict):
        for key in ("error", "message"):
            if isinstance(payload.get(key), str):
                return str(payload[key])
    return body.decode(errors="replace").strip()[:500]


def error_for_status(status: int, body: bytes, what: str) -> GatewayError:
    """Translate a TorchServe HTTP error status into the gateway's error (the one table).

    An input error keeps TorchServe's (or the handler's) message as it is: it tells the client
    what to fix. A server-side failure keeps it with addresses scrubbed; the log gets it whole.
    """
    server = _message(body)
    if status in (400, 413, 422):
        return BadRequest(f"input rejected by {what}: {server}")
    detail = f"{what}: HTTP {status}: {server}"
    if status in (408, 504):
        return BackendTimeout(f"{what}: timed out (HTTP {status}): {scrub(server)}", detail=detail)
    if status in (503, 507, 429):
        return BackendUnavailable(f"{what}: unavailable (HTTP {status}): {scrub(server)}", detail=detail)
    if status == 404:  # "Model not found" / "Model version ... does not exist": it did not run
        return VersionMissing(f"{what}: {scrub(server)} (HTTP {status})", detail=detail)
    return BackendError(f"{what}: {scrub(server)} (HTTP {status})", detail=detail)


def _reason(error: OSError) -> str:
    """Why a connection failed, without where: asyncio's own text names the address."""
    if error.errno is not None and error.errno > 0:
        return os.strerror(error.errno).lower()  # "connection refused"
    return scrub(error.strerror or type(error).__name__)  # resolver errors: "Name or service not known"


def error_for_exception(exc: BaseException, what: str) -> GatewayError:
    """Translate an HTTP client exception into the gateway's error (the one table): the kind of
    failure for the client, the exception's full text (with the address) for the log."""
    detail = f"{what}: {type(exc).__name__}: {exc}"
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return BackendTimeout(f"{what}: no answer within the deadline", detail=detail)
    if isinstance(exc, (aiohttp.ClientConnectorError, http1.CannotConnect)):
        return BackendUnreached(f"{what}: cannot connect ({_reason(exc.os_error)})", detail=detail)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, http1.Disconnected)):
        return BackendUnavailable(f"{what}: connection closed by the server", detail=detail)
    return BackendError(f"{what}: {type(exc).__name__}: {scrub(str(exc))}", detail=detail)


class TorchServeBackend:
    """Calls ``POST /predictions/{model}/{version}`` on TorchServe's inference API."""

    kind: Kind = KIND

    def __init__(
        self,
        url: str,
        management_url: str,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 2.0,
        max_connections: int = 100,
        store: Path | None = None,
        workers: int = 1,
        load_timeout: float = 300.0,
        retry_ratio: float = 0.1,
        startup_file: Path | None = None,
    ) -> None:
        self.passthrough = self  # TorchServe takes a caller's body as it is (its own protocol): forward()
        self.store = store
        self.startup_file = startup_file
        self.retries = RetryBudget(retry_ratio)
        self.workers = workers
        self.load_timeout = load_timeout
        self.url = url.rstrip("/")
        self.management_url = management_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._pool: http1.Pool | None = None
        #: The version the gateway last made each model's default (its stable version).
        self._defaults: dict[str, int] = {}

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=60, enable_cleanup_closed=True
            )
            # No cookies, no auto-decompression of bodies we pass through untouched.
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        parts = urlsplit(self.url)
        if self._pool is None and parts.scheme == "http" and parts.hostname:
            self._pool = http1.Pool(
                parts.hostname,
                parts.port or 80,
                limit=self._max_connections,
                connect_timeout=self._timeout.sock_connect or self._timeout.total or 30.0,
            )
            self._prefix = parts.path

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise BackendUnavailable("torchserve adapter is not started")
        return self._session

    async def _send(self, target: Target, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        path = f"/predictions/{target.model}/{target.version}"
        total = self._timeout.total or 30.0
        if DEADLINE.get() is not None:  # a gRPC caller's deadline bounds the call too
            total = within(total)
        if self._pool is not None:
            async with asyncio.timeout(total):
                status, data, ctype = await self._pool.post(self._prefix + path, body, content_type)
            return status, data, ctype or "application/json"
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=self._timeout.sock_connect)
        headers = {"Content-Type": content_type}
        async with self.session.post(self.url + path, data=body, headers=headers, timeout=timeout) as resp:
            data = await resp.read()
            return resp.status, data, resp.headers.get("Content-Type", "application/json")

    async def _post(self, target: Target, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        what = f"torchserve {target.model} v{target.version}"
        self.retries.earn()
        for attempt in (1, 2):
            try:
                return await self._send(target, body, content_type)
            except (aiohttp.ClientConnectorError, http1.CannotConnect) as exc:
                # The connection was never made, so the request never reached TorchServe: one
                # retry on a new connection is safe, if the budget allows.
                if attempt == 1 and self.retries.spend():
                    log.info("%s: connect failed (%s); retrying once", what, exc.os_error)
                    continue
                raise error_for_exception(exc, what) from exc
            except (TimeoutError, aiohttp.ClientError, http1.Disconnected, http1.ProtocolError) as exc:
                raise error_for_exception(exc, what) from exc
        raise AssertionError("unreachable")

    async def infer(self, target: Target, request: InferenceRequest) -> InferenceResult:
        if request.body is not None:
            body, form = request.body, request.form
        else:
            body, form = encode_inputs_column(request.inputs), "column"
        status, data, _ = await self._post(target, body, "application/json")
        if status != 200:
            raise error_for_status(status, data, f"torchserve {target.model} v{target.version}")
        return InferenceResult(body=data, form=form, decode=decode_outputs)

    async def forward(self, target: Target, request: Passthrough) -> InferenceResult:
        status, data, ctype = await self._post(target, request.body, request.content_type)
        if status != 200:
            raise error_for_status(status, data, f"torchserve {target.model} v{target.version}")
        return InferenceResult(body=data, form=None, decode=decode_outputs, content_type=ctype)

    async def signature(self, model: str, version: int) -> Signature | None:
        # TorchServe does not describe inputs; the model store's signature.json does.
        return None

    async def status(self, model: str, version: int) -> VersionStatus:
        url = f"{self.management_url}/models/{model}/{version}"
        try:
            async with self.session.get(url) as resp:
                data = await resp.read()
                if resp.status == 404:  # "Model not found: m" or "Model version: v does not exist ..."
                    return VersionStatus(version, "NOT_FOUND", _message(data))
                if resp.status != 200:
                    return VersionStatus(version, "UNKNOWN", _message(data))
        except (TimeoutError, aiohttp.ClientError) as exc:
            return VersionStatus(version, "UNKNOWN", error_for_exception(exc, "torchserve").message)
        return _status_from_description(version, orjson.loads(data))

    async def registered(self, model: str) -> list[str]:
        """The version strings TorchServe has registered for ``model``, exactly as it keys them."""
        url = f"{self.management_url}/models/{model}/all"
        status, body = await _management(self.session, "GET", url, self.load_timeout)
        if status == 404:  # "Model not found: m": no version registered
            return []
        if status != 200:
            raise error_for_status(status, body, f"torchserve describe {model}")
        try:
            entries = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BackendError(f"torchserve describe {model}: unreadable answer: {exc}") from exc
        return [str(e["modelVersion"]) for e in entries if isinstance(e, dict) and "modelVersion" in e]

    async def set_default(self, model: str, version: int) -> None:
        """``PUT /models/{model}/{version}/set-default``: TorchServe's default follows ``stable``."""
        self._defaults[model] = version
        await self._put_default(model, str(version))

    async def _put_default(self, model: str, version: str) -> None:
        url = f"{self.management_url}/models/{model}/{version}/set-default"
        status, body = await _management(self.session, "PUT", url, self.load_timeout)
        if status != 200:
            raise error_for_status(status, body, f"torchserve set-default {model} v{version}")

    async def load(self, model: str, version: int, keep: Mapping[str, Collection[int]]) -> None:
        """Register ``model`` version ``version`` with its workers (synchronously)."""
        if self.store is None:
            raise BackendUnavailable("torchserve adapter has no model store to load from")
        name = link_archive(self.store, model, version)
        url = (
            f"{self.management_url}/models?url={name}&model_name={model}"
            f"&initial_workers={self.workers}&synchronous=true"
        )
        status, body = await _management(self.session, "POST", url, self.load_timeout)
        if status == 409 or (status == 500 and b"already" in body.lower()):
            return  # already registered: loading twice is harmless
        if status != 200:
            raise error_for_status(status, body, f"torchserve register {model} v{version}")
        if self._defaults.get(model) == version:
            # Registered again (TorchServe restarted): the first version registered became the
            # default, so the stable one takes it back.
            try:
                await self._put_default(model, str(version))
            except GatewayError as exc:
                log.warning("could not make %s v%d torchserve's default again: %s", model, version, exc.message)

    async def unload(self, model: str, version: int, keep: Mapping[str, Collection[int]]) -> None:
        """Unregister a version; one that is not registered is fine.

        TorchServe refuses to unregister a model's default version while other versions are
        registered (``403 Cannot remove default version for model m``), and the default is the
        first version ever registered unless moved. So while other versions stay, the default
        moves first: to the stable version (the last ``set_default``) when it is registered,
        else to the highest other registered version.
        """
        what = f"torchserve unregister {model} v{version}"
        registered = await self.registered(model)
        if str(version) in registered:
            others = [v for v in registered if v != str(version)]
            if others:
                await self._put_default(model, _new_default(others, self._defaults.get(model)))
            url = f"{self.management_url}/models/{model}/{version}"
            for attempt in range(1, UNREGISTER_ATTEMPTS + 1):
                status, body = await _management(self.session, "DELETE", url, self.load_timeout)
                # 500 "Interrupted while cleaning resources" and 408 "Timed out while cleaning
                # resources": TorchServe could not stop the workers, put the version back and asks
                # for the request again (WorkLoadManager.modelChanged, ApiUtils.unregisterModel).
                if status not in (408, 500) or attempt == UNREGISTER_ATTEMPTS:
                    break
                log.warning("%s answered %d (%s); asking again", what, status, _message(body))
                await asyncio.sleep(0.5 * attempt)
            if status not in (200, 404):  # 404: unregistered meanwhile
                raise error_for_status(status, body, what)
        if self.store is not None:
            (self.store / f"{model}.{version}.mar").unlink(missing_ok=True)

    def write_startup(self, keep: Mapping[str, Collection[int]], defaults: Mapping[str, int]) -> bool:
        """Write the versions TorchServe registers when it starts (``deploy/docker/stack_init.py``
        reads the file): ``{"models": {model: {"versions": [...], "default": ...}}}``, versions as
        TorchServe's exact version strings, the default registered first: the stable version, or
        the highest when the stable one is on the other stack."""
        if self.startup_file is None:
            return False
        models = {}
        for model, versions in sorted(keep.items()):
            if not versions:
                continue
            default = defaults.get(model)
            chosen = default if default in versions else max(versions)  # as unload() picks one
            models[model] = {"default": str(chosen), "versions": [str(v) for v in sorted(versions)]}
        text = orjson.dumps({"models": models}, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
        return write_if_changed(self.startup_file, text)


def _new_default(others: list[str], stable: int | None) -> str:
    """The version to make default before unregistering another: stable if registered, else the
    highest other registered one (versions not written as the gateway writes them rank last)."""
    if stable is not None and str(stable) in others:
        return str(stable)
    return max(others, key=lambda v: (version_number(v) or 0, v))


def _status_from_description(version: int, payload: Any) -> VersionStatus:
    """Map TorchServe's model description (workers and their states) onto TF Serving's states."""
    entry = payload[0] if isinstance(payload, list) and payload else payload
    workers = entry.get("workers", []) if isinstance(entry, dict) else []
    ready = sum(1 for w in workers if w.get("status") == "READY")
    details: dict[str, object] = {"workers": len(workers), "ready_workers": ready}
    if ready:
        return VersionStatus(version, "AVAILABLE", details=details)
    if workers:
        return VersionStatus(version, "LOADING", details=details)
    return VersionStatus(version, "START", "no workers", details=details)


def link_archive(store: Path, model: str, version: int) -> str:
    """Link ``<store>/<model>.<version>.mar`` to the version's archive; return the link's name.

    TorchServe 0.12 finds an archive by file name at the top of its model store only (a nested
    ``url=mlp/1/mlp.mar`` answers 404), so each version gets a uniquely named relative link there;
    relative, so it resolves the same inside the TorchServe container sharing the volume.
    """
    archives = sorted((store / model / str(version)).glob("*.mar"))
    if not archives:
        raise BadRequest(f"{model}/{version} holds no .mar archive")
    link = store / f"{model}.{version}.mar"
    target = archives[0].relative_to(store)
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return link.name
    tmp = store / f".{link.name}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)
    return link.name


async def _management(session: aiohttp.ClientSession, method: str, url: str, seconds: float) -> tuple[int, bytes]:
    try:
        async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=seconds, sock_connect=5)) as resp:
            return resp.status, await resp.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise error_for_exception(exc, "torchserve management API") from exc
