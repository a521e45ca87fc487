"""``respond`` writes the header lines Starlette's ``Response`` writes, for every front door's headers."""

from __future__ import annotations

import pytest
from starlette.responses import Response

from gateway.core.types import Target
from gateway.protocols import common, oip_binary
from gateway.protocols.common import respond, routing_headers
from gateway.routing.table import Resolved
from tests.fakes import FakeBackend

TS = Target("mlp", 3, FakeBackend("torchserve"))
TF = Target("cnn", 12, FakeBackend("tfserving"))


@pytest.mark.parametrize("resolved", [Resolved(TS, None), Resolved(TS, "canary"), Resolved(TF, "stable")])
@pytest.mark.parametrize(
    ("media_type", "extra"),
    [
        ("application/json", ()),
        ("application/json", ({}, {})),
        ("application/json", ({"X-Content-Type-Options": "nosniff"},)),  # TorchServe's paths
        (oip_binary.MEDIA_TYPE, ({}, {oip_binary.HEADER: "112"})),  # the binary tensor form
        ("image/png", ({"X-Content-Type-Options": "nosniff"},)),  # a handler's own answer, passed on
        ("text/plain", ({"X-Content-Type-Options": "nosniff"},)),  # Starlette adds the charset
        ("text/plain; charset=latin-1", ()),
        ("application/json", ({"Content-Type": "application/x-ndjson"},)),  # a codec naming the framing
        ("application/json", ({"content-length": "3"},)),
    ],
)
@pytest.mark.parametrize("body", [b"", b'{"predictions": [[0.1, 0.2]]}'])
def test_the_same_header_lines_as_starlettes_response(resolved, media_type, extra, body):
    merged = dict(routing_headers(resolved))
    for headers in extra:
        merged.update(headers)
    expected = Response(body, media_type=media_type, headers=merged)
    for _ in range(2):  # the second time from the encoded routing headers
        got = respond(resolved, body, media_type, *extra)
        assert got.raw_headers == expected.raw_headers
        assert (got.status_code, got.body, got.media_type, got.background) == (200, body, media_type, None)


def test_routing_headers_are_encoded_once_per_route_and_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(common, "_ROUTE_LINES", {})
    monkeypatch.setattr(common, "_ROUTE_LINES_MAX", 3)
    first = respond(Resolved(TS, None), b"{}", "application/json")
    assert list(common._ROUTE_LINES) == [("mlp", 3, "torchserve", None)]
    respond(Resolved(TS, None), b"{}", "application/json")
    assert len(common._ROUTE_LINES) == 1
    for version in range(10):
        respond(Resolved(Target("mlp", version, TS.backend), None), b"{}", "application/json")
        assert len(common._ROUTE_LINES) <= 3
    assert respond(Resolved(TS, None), b"{}", "application/json").raw_headers == first.raw_headers
