"""The gateway's HTTP/1.1 server protocol: uvicorn's httptools protocol, each answer in one write.

uvicorn writes a response's status line and headers when the app sends ``http.response.start``,
and its body when the app sends ``http.response.body``: two ``write`` system calls, two TCP
segments, and a client that wakes up for the head before the body it waits for (strace counted
both writes on every inference answer; docs/benchmarks.md, "System calls per request"). Its
httptools protocol has no option to join them, so ``JoinedWritesProtocol`` gives each request's
cycle a transport that holds a head which declares a ``content-length`` (a body follows at once:
every inference answer, every JSON answer) until the next write, and writes both as one. uvicorn
writes the body of such an answer even when it is empty; the answer to a HEAD request has none, so
there a head goes out at once, as does a head without a length (a chunked stream) and everything
else, and ``close`` writes what is held first. The bytes on the wire, and their order, are
uvicorn's; only their grouping into writes changes.

uvicorn is told to use it with ``Config(http=JoinedWritesProtocol)``. It leans on two things of
uvicorn's httptools protocol, checked by tests/test_wire.py against the installed uvicorn: the
request's cycle is made in ``on_headers_complete`` and writes through its ``transport`` attribute.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: How uvicorn writes the header (names lower-cased, one space after the colon).
_LENGTH = b"\r\ncontent-length: "
#: Above this a body is not copied behind its head: the two go to the transport as one writev.
_COPY_LIMIT = 64 * 1024


class HeldHead:
    """A request cycle's transport: a head with a content length waits for the body's write."""

    __slots__ = ("_held", "_hold", "_transport")

    def __init__(self, transport: asyncio.Transport, hold: bool) -> None:
        self._transport = transport
        self._hold = hold  # False for a HEAD request: no body write follows its head
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(data) <= _COPY_LIMIT:
                self._transport.write(held + data)
            else:
                self._transport.writelines((held, data))
        elif self._hold and _LENGTH in data and data.startswith(b"HTTP/1.1 "):
            self._held = data
        else:
            self._transport.write(data)

    def close(self) -> None:
        held = self._held
        if held is not None:  # the app failed between head and body: uvicorn closes after the head
            self._held = None
            self._transport.write(held)
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class JoinedWritesProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, each request's cycle writing through a ``HeldHead``."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not before:
            # The cycle's task is created but has not run yet: nothing has been written through it.
            cycle.transport = HeldHead(self.transport, hold=cycle.scope["method"] != "HEAD")  # type: ignore[assignment]
