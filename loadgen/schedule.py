"""When requests start: open loops, which keep their schedule whatever the answers do, and closed loops.

An open loop starts request *i* at ``i / rate`` seconds whether or not the earlier ones have
answered, so a slow server cannot slow its own load down and hide its tail, as a closed loop of
"send, wait, send" would. A closed loop is for capacity: ``concurrency`` clients that each send
the next request on an answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from loadgen.send import Direct, Run, Sample, call_direct, send_due


async def interleaved(
    sessions: list[aiohttp.ClientSession],
    urls: list[str],
    bodies: list[bytes],
    runs: list[Run] | None,
    rate: float,
    seconds: float,
    progress: Callable[[int, bool], None] | None = None,
) -> None:
    """The open loop: target ``j``'s request ``i`` is due at ``(i + j / n) / rate``, sent then, awaited later."""
    loop = asyncio.get_running_loop()
    count = max(1, round(rate * seconds))
    origin = loop.time() + 0.05
    tasks: list[tuple[int, asyncio.Task[Sample]]] = []
    n = len(urls)

    def done(j: int) -> Callable[[asyncio.Task[Sample]], None]:
        def record(task: asyncio.Task[Sample]) -> None:
            if progress is not None and not task.cancelled():
                progress(j, task.result().error is None)

        return record

    for i in range(count):
        for j in range(n):
            due = origin + (i + j / n) / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            run = runs[j] if runs is not None else None
            task = asyncio.create_task(send_due(sessions[j], urls[j], bodies[j], due, origin, run))
            task.add_done_callback(done(j))
            tasks.append((j, task))
    for j, task in tasks:
        sample = await task
        if runs is not None:
            runs[j].samples.append(sample)


async def bounded(
    start: float, rate: float, seconds: float, bound: int, send: Callable[[int, float], Coroutine[Any, Any, None]]
) -> int:
    """Start ``send(i, due)`` at ``due = start + i / rate`` (``time.perf_counter`` seconds), unless
    ``bound`` sends are still open: that tick is missed, not queued. Returns the ticks missed."""
    missed = 0
    outstanding: set[asyncio.Task[None]] = set()
    for i in range(round(rate * seconds)):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))  # yields even when behind schedule
        if len(outstanding) >= bound:
            missed += 1
            continue
        task = asyncio.create_task(send(i, due))
        outstanding.add(task)
        task.add_done_callback(outstanding.discard)
    await asyncio.gather(*outstanding)
    return missed


async def closed_loop(url: Direct, body: bytes, concurrency: int, seconds: float) -> tuple[float, int]:
    """Requests per second of ``concurrency`` clients that each send the next request on answer, and errors."""
    done = errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                try:
                    await call_direct(session, url, body)
                    done += 1
                except Exception:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return done / elapsed, errors
