"""The admin API: every rollout operation, behind bearer tokens. The ``gateway`` CLI calls it.

Reads (status, history, export) need a read-only or read-write token; writes need read-write.
The history records the token's name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field, StrictInt

from gateway.core.errors import BadRequest, PayloadTooLarge
from gateway.protocols.common import json_response
from gateway.registry.guardspec import GuardSpec
from gateway.rollouts.answers import (
    Answer,
    ApplyAnswer,
    DeployAnswer,
    HistoryAnswer,
    LabelAnswer,
    MinReadyAnswer,
    RetireAnswer,
    ShadowAnswer,
    StableAnswer,
    StatusAnswer,
    TrafficAnswer,
)
from gateway.rollouts.service import RolloutService
from gateway.rollouts.state import apply_state, export_state
from gateway.rollouts.views import history_view, status_view
from gateway.services import services_of

router = APIRouter(prefix="/admin", tags=["admin"])

Percent = Annotated[float, Field(ge=0, le=100, description="share of requests, in percent")]
Version = Annotated[int, Field(ge=1, description="a version number")]


class PromoteBody(BaseModel):
    version: Version | None = None


class TrafficBody(BaseModel):
    canary: Version | None = Field(None, description="version to receive the share; null: canary off")
    percent: Percent = 0.0
    sticky_header: str | None = Field(None, max_length=128, pattern=r"^[A-Za-z0-9-]+$")
    guard: GuardSpec | None = Field(None, description="thresholds that set the canary share to 0")


class ShadowBody(BaseModel):
    version: Version | None = Field(None, description="version to copy requests to; null: off")
    percent: Percent = 0.0


class LabelBody(BaseModel):
    version: Version


class MinReadyBody(BaseModel):
    min_ready: Annotated[StrictInt, Field(ge=1, le=1000)] | None = Field(
        description="replicas of the stack that must have a version ready before it is routed; "
        "null: the default, all current replicas (at least one)"
    )


def answer(result: Answer) -> Response:
    """The JSON of a typed answer (the route declares its model for the OpenAPI schema)."""
    return json_response(result.body())


def _service(request: Request) -> RolloutService:
    return services_of(request).rollouts


def _actor(request: Request, role: str) -> str:
    return services_of(request).auth.require(request, role).name


@router.get("/models", response_model=StatusAnswer)
async def status_all(request: Request) -> Response:
    """Every model: versions (and their backend state), labels, traffic, shadow and its results."""
    _actor(request, "read")
    return answer(await status_view(_service(request)))


@router.get("/models/{model}", response_model=StatusAnswer)
async def status_one(model: str, request: Request) -> Response:
    """One model's status."""
    _actor(request, "read")
    return answer(await status_view(_service(request), model))


@router.get("/history", response_model=HistoryAnswer)
async def history(
    request: Request, model: str | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> Response:
    """The audit history, newest first."""
    _actor(request, "read")
    return answer(await history_view(_service(request), model, limit))


@router.post("/models/{model}/deploy", response_model=DeployAnswer)
async def deploy(
    model: str,
    request: Request,
    version: Annotated[int | None, Query(ge=1)] = None,
    canary: Annotated[float | None, Query(ge=0, le=100)] = None,
    source: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="instead of a body: an http(s):// URL under an allow-listed prefix, or a "
            "file:// path inside an allowed directory, of a tar of the version directory",
        ),
    ] = None,
) -> Response:
    """Deploy the version in the request body (a tar stream of its directory), or from ``source``."""
    actor = _actor(request, "write")
    limit = services_of(request).settings.max_artifact_bytes
    fd, name = tempfile.mkstemp(prefix=".upload-", dir=_upload_dir(request))
    path = Path(name)
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"artifact is over the limit of {limit} bytes")
                out.write(chunk)
        if source is not None and size:
            raise BadRequest("give the artifact either as the request body or as source, not both")
        if source is None and size == 0:
            raise BadRequest("the request body must be a tar stream of the version directory (or give source)")
    except BaseException:
        path.unlink(missing_ok=True)  # noqa: ASYNC240 - a local temp file, instant
        raise
    deployer = services_of(request).deployer
    return answer(await deployer.deploy(model, path, version, canary, actor, source=source))


def _upload_dir(request: Request) -> Path:
    store = services_of(request).settings.model_store
    store.mkdir(parents=True, exist_ok=True)
    return store


@router.post("/models/{model}/promote", response_model=StableAnswer)
async def promote(model: str, body: PromoteBody, request: Request) -> Response:
    """``stable`` moves to the canary (or the named version)."""
    return answer(await _service(request).promote(model, body.version, _actor(request, "write")))


@router.post("/models/{model}/rollback", response_model=StableAnswer)
async def rollback(model: str, request: Request) -> Response:
    """``stable`` moves back to the previous stable version."""
    return answer(await _service(request).rollback(model, _actor(request, "write")))


@router.put("/models/{model}/traffic", response_model=TrafficAnswer)
async def traffic(model: str, body: TrafficBody, request: Request) -> Response:
    """Set the canary version and its share (and an optional sticky header)."""
    actor = _actor(request, "write")
    result = await _service(request).traffic(model, body.canary, body.percent, body.sticky_header, actor, body.guard)
    return answer(result)


@router.put("/models/{model}/shadow", response_model=ShadowAnswer)
async def shadow(model: str, body: ShadowBody, request: Request) -> Response:
    """Copy a share of live requests to a version (``version: null`` turns shadowing off)."""
    actor = _actor(request, "write")
    return answer(await _service(request).set_shadow(model, body.version, body.percent, actor))


@router.put("/models/{model}/labels/{label}", response_model=LabelAnswer)
async def label(model: str, label: str, body: LabelBody, request: Request) -> Response:
    """Point a label at a version."""
    if not label.replace("-", "").replace("_", "").isalnum() or len(label) > 64:
        raise BadRequest("label must be letters, digits, '-' or '_' (at most 64)")
    actor = _actor(request, "write")
    return answer(await _service(request).label(model, label, body.version, actor))


@router.put("/models/{model}/min-ready", response_model=MinReadyAnswer)
async def min_ready(model: str, body: MinReadyBody, request: Request) -> Response:
    """How many of the stack's replicas must have a new version ready before a deploy routes it."""
    actor = _actor(request, "write")
    return answer(await _service(request).set_min_ready(model, body.min_ready, actor))


@router.post("/models/{model}/versions/{version}/retire", response_model=RetireAnswer)
async def retire(model: str, version: int, request: Request) -> Response:
    """Unload a version no label, policy or rollback uses."""
    return answer(await _service(request).retire(model, version, _actor(request, "write")))


@router.get(
    "/state",
    response_class=Response,
    responses={
        200: {"description": "The state document", "content": {"application/yaml": {"schema": {"type": "object"}}}}
    },
)
async def export(request: Request) -> Response:
    """The desired state (labels, traffic, shadow) as YAML."""
    _actor(request, "read")
    document = export_state(await _service(request).snapshot())
    return Response(yaml.safe_dump(document, sort_keys=False), media_type="application/yaml")


@router.put("/state", response_model=ApplyAnswer)
async def apply(request: Request) -> Response:
    """Make the registry match a YAML (or JSON) state document; idempotent."""
    actor = _actor(request, "write")
    try:
        document: Any = yaml.safe_load(await request.body())
    except yaml.YAMLError as exc:
        raise BadRequest(f"state document is not valid YAML: {exc}") from None
    return answer(await apply_state(_service(request), document, actor))
