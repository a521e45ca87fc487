"""Sending one request and recording what it measured.

Latency counts from when a request was *due* on its schedule, not from when the client got round
to sending it, so a request held back by a full connection pool or a busy client counts its wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from loadgen.bodies import error_text
from loadgen.targets import Target

JSON = {"Content-Type": "application/json"}


@dataclass
class Sample:
    """One measured request: when it was due (seconds from the start), how long it took, how it ended."""

    due: float
    latency: float
    lag: float  # how late the client started it (its own scheduling), part of ``latency``
    status: int | None
    error: str | None = None


@dataclass
class Run:
    """Everything measured for one target."""

    target: Target
    samples: list[Sample] = field(default_factory=list)
    backend: str | None = None
    last_error: str | None = None


def client(limit: int, timeout: float = 10.0) -> aiohttp.ClientSession:
    """A session of at most ``limit`` connections whose requests give up after ``timeout`` seconds."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit), timeout=aiohttp.ClientTimeout(total=timeout)
    )


async def send_due(
    session: aiohttp.ClientSession, url: str, body: bytes, due: float, origin: float, run: Run | None
) -> Sample:
    """POST ``body``, due at loop time ``due``; notes the backend and the last error in ``run``."""
    loop = asyncio.get_running_loop()
    lag = loop.time() - due
    status: int | None = None
    error: str | None = None
    try:
        async with session.post(url, data=body, headers=JSON) as resp:
            status = resp.status
            payload = await resp.read()
            if run is not None:
                run.backend = resp.headers.get("X-Backend", run.backend)
            if status >= 400:
                error = str(status)
                if run is not None:
                    run.last_error = f"{status}: {error_text(payload.decode(errors='replace'))}"
    except TimeoutError:
        error = "timeout"
    except aiohttp.ClientError as exc:
        error = type(exc).__name__
        if run is not None:
            run.last_error = f"{error}: {exc}"
    end = loop.time()
    return Sample(due=due - origin, latency=end - due, lag=max(lag, 0.0), status=status, error=error)


async def timed_post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str] | None = None
) -> float:
    """Milliseconds of one POST that must answer 200 (``RuntimeError`` otherwise); ``headers``
    replace the JSON content type."""
    start = time.perf_counter()
    async with session.post(url, data=body, headers=JSON if headers is None else headers) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url} -> {r.status}")
    return (time.perf_counter() - start) * 1000


async def post_outcome(session: aiohttp.ClientSession, url: str, body: bytes) -> str:
    """``ok``, ``HTTP <status>`` for any other status, or the name of the exception."""
    try:
        async with session.post(url, data=body, headers=JSON) as response:
            await response.read()
    except Exception as exc:
        return type(exc).__name__
    return "ok" if response.status == 200 else f"HTTP {response.status}"


#: A direct call: a URL to POST to, or a coroutine function that makes the call and returns its ms.
Direct = str | Callable[[], Awaitable[float]]


async def call_direct(session: aiohttp.ClientSession, direct: Direct, body: bytes) -> float:
    """Milliseconds of one call: a POST of ``body`` to a URL, or the call ``direct`` makes itself."""
    if isinstance(direct, str):
        return await timed_post(session, direct, body)
    return await direct()
