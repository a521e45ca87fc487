"""Request IDs: taken from ``X-Request-ID`` when the caller sends a sane one, else made; returned
in the response header and attached to every log line written while the request is served.

The caller's ID ends up in a response header and in log lines, so only 1 to 128 characters from a
small alphabet pass; anything else (too long, control characters, CR/LF, non-ASCII) is replaced by
a fresh ID rather than cleaned, so that a forged value never reaches either.

At debug level each request is logged with its headers, credentials redacted (``SECRET_HEADERS``)
and every value escaped and shortened, so that turning debug on to chase a problem never puts a
token in the log."""

from __future__ import annotations

import logging
import os
import re
from contextvars import ContextVar, Token

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")
#: Headers whose values are credentials: logged as ``[redacted]``.
SECRET_HEADERS = frozenset({b"authorization", b"proxy-authorization", b"x-api-key", b"cookie"})
_LOGGED_VALUE_CHARS = 200
_LOGGED_PATH_CHARS = 100
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # fullmatch: ``$`` would admit a final "\n"


class RequestIdMiddleware:
    """Pure ASGI: sets ``REQUEST_ID`` and the ``X-Request-ID`` response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, token = begin(scope)

        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, with_header)
        finally:
            REQUEST_ID.reset(token)


def begin(scope: Scope) -> tuple[str, Token[str]]:
    """The request's ID (the caller's sane ``X-Request-ID``, else a new one), set in ``REQUEST_ID``
    until the token is reset; at debug level the request is logged. The inference fast path
    (``gateway.protocols.fastpath``) calls this itself, then adds the response header."""
    incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
    request_id = incoming if _SANE.fullmatch(incoming) else new_id()
    token = REQUEST_ID.set(request_id)
    if log.isEnabledFor(logging.DEBUG):
        path, headers = shown_path(scope["path"]), describe_headers(scope["headers"])
        log.debug("%s %s headers: %s", scope["method"], path, headers)
    return request_id, token


def new_id() -> str:
    """A random version-4 UUID as 32 hex digits, what ``uuid.uuid4().hex`` gives, at a third of its
    cost (no ``UUID`` object is built; it ran on every request)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    return raw.hex()


def shown_path(path: str) -> str:
    """A request path for a log line: ASCII-escaped (a name with CR/LF, control or non-ASCII
    characters never reaches the log as such) and cut to 100 characters."""
    return ascii(path[:_LOGGED_PATH_CHARS] + ("..." if len(path) > _LOGGED_PATH_CHARS else ""))


def describe_headers(headers: list[tuple[bytes, bytes]]) -> str:
    """``name: 'value'`` pairs for a log line: credentials redacted, values escaped (``repr``, so
    CR/LF and control characters cannot forge lines) and cut to 200 characters."""
    parts = []
    for name, value in headers:
        if name.lower() in SECRET_HEADERS:
            shown = "[redacted]"
        else:
            text = value.decode("latin-1")
            shown = repr(text[:_LOGGED_VALUE_CHARS] + ("..." if len(text) > _LOGGED_VALUE_CHARS else ""))
        parts.append(f"{name.decode('latin-1')!r}: {shown}")
    return ", ".join(parts)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every log record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True
