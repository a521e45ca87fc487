"""The admin gate: authenticate, authorise and bound the body of every ``/admin`` request before
any byte of its body is read.

FastAPI parses a route's JSON body (and pydantic validates it) before the handler runs, so a
token check inside a handler comes after the whole body is in memory: an unauthenticated
300 MB ``PUT`` grew the gateway by almost a gigabyte, and a broken body without a token answered
400 instead of 401. This pure ASGI layer runs first. It answers 401 or 403 from the headers
alone, refuses a declared ``Content-Length`` over the limit with 413, and counts the bytes as
they stream in (chunked bodies too), answering 413 as soon as they pass the limit. Deploy
uploads keep the artifact limit (``GATEWAY_MAX_ARTIFACT_BYTES``); every other admin body is a
small JSON or YAML document (``GATEWAY_ADMIN_MAX_BODY_BYTES``).
"""

from __future__ import annotations

import re

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.core.auth import Authenticator
from gateway.core.errors import BadRequest, GatewayError, PayloadTooLarge
from gateway.protocols.common import error_response
from gateway.settings import Settings

#: Methods a read-only token may use; every other method changes state and needs read-write.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEPLOY = re.compile(r"/admin/models/[^/]+/deploy")


def is_admin_path(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


class _BodyTooLarge(Exception):
    """Raised into the app by the counting ``receive`` once the body passes its limit."""


class AdminGate:
    """Pure ASGI: every admin request is authenticated and its body bounded before the app reads it.

    The routes check the token again (cheap, from the headers) to learn its name for the history,
    so they stay safe even if mounted without this gate.
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator, settings: Settings) -> None:
        self.app = app
        self.auth = authenticator
        self.settings = settings

    def limit_of(self, method: str, path: str) -> tuple[int, str]:
        """The body limit of a request, and the setting that holds it (for the message)."""
        if method == "POST" and _DEPLOY.fullmatch(path):
            return self.settings.max_artifact_bytes, "GATEWAY_MAX_ARTIFACT_BYTES"
        return self.settings.admin_max_body_bytes, "GATEWAY_ADMIN_MAX_BODY_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_admin_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        method: str = scope["method"]
        limit, setting = self.limit_of(method, scope["path"])
        try:
            role = "read" if method in READ_METHODS else "write"
            self.auth.require_header(request.headers.get("authorization", ""), role)
            declared = request.headers.get("content-length")
            if declared is not None:
                if not declared.isdigit():
                    raise BadRequest("Content-Length header must be a non-negative integer")
                if int(declared) > limit:
                    raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {limit} ({setting})")
        except GatewayError as exc:
            await error_response(request, exc)(scope, receive, send)
            return
        await self._bounded(scope, receive, send, limit, setting)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send, limit: int, setting: str) -> None:
        """Run the app with a ``receive`` that counts body bytes; past ``limit``, answer 413.

        The app may turn the exception raised into its ``receive`` into an answer of its own
        (FastAPI makes a body-reading failure a 400); that answer is dropped for the 413.
        """
        size = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal size, exceeded
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            exc = PayloadTooLarge(f"request body is over the limit of {limit} bytes ({setting})")
            await error_response(Request(scope), exc)(scope, receive, send)
