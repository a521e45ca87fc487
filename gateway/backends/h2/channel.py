"""The client's entry point: unary calls to one address over one HTTP/2 connection at a time."""

from __future__ import annotations

import asyncio

from gateway.backends.h2.connection import Connection
from gateway.backends.h2.wire import Code, RpcError

#: Attempts of a call the server refused unprocessed, after the first.
MAX_REFUSED = 5


class Channel:
    """Unary gRPC calls to one ``host:port`` over one HTTP/2 connection at a time."""

    def __init__(self, host: str, port: int, *, max_message_bytes: int = 64 << 20) -> None:
        self.host, self.port = host, port
        self.authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.max_message = max_message_bytes
        self._connection: Connection | None = None
        self._connecting = asyncio.Lock()

    async def _connect(self, deadline: float) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                async with self._connecting:
                    connection = self._connection
                    if connection is not None and connection.usable:
                        return connection
                    _, connection = await loop.create_connection(
                        lambda: Connection(self.authority, self.max_message), self.host, self.port
                    )
        except TimeoutError:
            raise RpcError(Code.DEADLINE_EXCEEDED, f"Deadline Exceeded while connecting to {self.authority}") from None
        except OSError as exc:
            raise RpcError(Code.UNAVAILABLE, f"failed to connect to {self.authority}: {exc.strerror or exc}",
                           unsent=True) from exc  # fmt: skip
        self._connection = connection
        return connection

    async def unary(self, path: str, message: bytes, seconds: float) -> bytes:
        """The answer's message for ``message`` sent to ``path`` within ``seconds``; ``RpcError`` when
        the call fails."""
        if len(message) > self.max_message:
            raise RpcError(
                Code.RESOURCE_EXHAUSTED, f"Sent message larger than max ({len(message)} vs. {self.max_message})"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        refused = 0
        while True:
            connection = self._connection
            if connection is None or not connection.usable:
                connection = await self._connect(deadline)
            if len(connection.calls) < connection.peer_streams:
                try:
                    return await connection.unary(path, message, deadline)
                except RpcError as exc:
                    # Refused by the server before it processed anything (REFUSED_STREAM, or past
                    # a GOAWAY's last stream): retried at once, as gRPC's transparent retry does.
                    if not exc.unsent or refused >= MAX_REFUSED or loop.time() >= deadline:
                        raise
                    refused += 1
                    continue
            try:  # the server's stream limit is reached: wait for a slot, within the deadline
                async with asyncio.timeout_at(deadline):
                    await connection.wait_slot()
            except TimeoutError:
                raise RpcError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded waiting for a stream") from None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
