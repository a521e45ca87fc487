"""The inference routes, declared once.

Everything else about them is derived from ``ROUTES``: the FastAPI routes (and so the OpenAPI
document), the fast path's patterns (``fastpath``: Starlette's own compiled pattern of each path),
and the metrics' protocol label (``instrument``: each protocol's path prefix). Every route is served
by ``pipeline.serve`` with its protocol's codec, which also checks the inference key, once.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import APIRouter, Request, Response
from starlette.routing import compile_path

from gateway.protocols import oip, tfserving_rest, torchserve
from gateway.protocols.pipeline import Codec, serve

Endpoint = Callable[..., Awaitable[Response]]


@dataclass(frozen=True)
class InferenceRoute:
    """One POST route: its path template, name (the OpenAPI operation), summary and codec."""

    path: str
    name: str
    doc: str
    codec: Codec
    #: Starlette's compiled pattern of ``path``, exactly what its router matches with.
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", compile_path(self.path)[0])

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(self.pattern.groupindex)

    @property
    def prefix(self) -> str:
        """The literal start of the path, before its first parameter."""
        return self.path.split("{", 1)[0]


_V1, _V2, _TS = tfserving_rest.CODEC, oip.CODEC, torchserve.CODEC

_DEFAULT = "Predict with the model's default version (`stable`, else the highest; or, for its share, the canary)."
_VERSION = "Predict with an explicit version."
_LABEL = "Predict with the version a label points at."
_INFER, _INFER_VERSION = _DEFAULT.replace("Predict", "Infer"), _VERSION.replace("Predict", "Infer")

#: In the order they are matched (none overlaps another).
ROUTES: tuple[InferenceRoute, ...] = (
    InferenceRoute("/v1/models/{model}:predict", "predict", _DEFAULT, _V1),
    InferenceRoute("/v1/models/{model}/versions/{version}:predict", "predict_version", _VERSION, _V1),
    InferenceRoute("/v1/models/{model}/labels/{label}:predict", "predict_label", _LABEL, _V1),
    InferenceRoute("/v2/models/{model}/infer", "infer", _INFER, _V2),
    InferenceRoute("/v2/models/{model}/versions/{version}/infer", "infer_version", _INFER_VERSION, _V2),
    InferenceRoute("/predictions/{model}", "predictions", _DEFAULT, _TS),
    InferenceRoute("/predictions/{model}/{version}", "predictions_version", _VERSION, _TS),
)


def match(path: str) -> tuple[InferenceRoute, dict[str, str]] | None:
    """The inference route of a path and its path parameters, or None."""
    for route in ROUTES:
        found = route.pattern.match(path)
        if found is not None:
            return route, found.groupdict()
    return None


def protocol_prefixes() -> tuple[tuple[str, str], ...]:
    """(path prefix, protocol name) of every protocol, for the metrics' protocol label."""
    return tuple(dict.fromkeys((route.prefix, route.codec.protocol) for route in ROUTES))


def _endpoint(route: InferenceRoute) -> Endpoint:
    """A FastAPI endpoint for ``route`` whose signature names its path parameters (for OpenAPI)."""
    codec = route.codec

    async def endpoint(request: Request, **params: str) -> Response:
        return await serve(request, codec, params)

    parameters = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)]
    parameters += [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, annotation=str) for p in route.params]
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.__name__ = endpoint.__qualname__ = route.name
    endpoint.__doc__ = route.doc
    return endpoint


def router() -> APIRouter:
    """The FastAPI routes of ``ROUTES`` (used when the fast path passes a request on, and for OpenAPI)."""
    api = APIRouter()
    for route in ROUTES:
        api.add_api_route(
            route.path,
            _endpoint(route),
            methods=["POST"],
            name=route.name,
            tags=[route.codec.tag],
            openapi_extra=route.codec.openapi,
        )
    return api
