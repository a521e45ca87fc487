"""Bounded decode work: large inference bodies are decoded off the event loop, a few at a time.

Decoding a JSON body into tensors is CPU work proportional to its size (up to
``GATEWAY_MAX_BODY_BYTES``, 16 MiB by default) and builds many Python objects on the way. Done on
the event loop, one large body stalls every other request; done without a cap, a burst of them
holds many copies in memory at once. Bodies up to ``GATEWAY_LARGE_BODY_BYTES`` are decoded inline
(the common, fast case); larger ones take one of ``GATEWAY_LARGE_DECODES_MAX`` slots and run in a
worker thread. With every slot taken the request answers 503 with ``Retry-After`` at once: a
queue would only move the memory and the wait somewhere less visible.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import TypeVar

from gateway.errors import Overloaded

T = TypeVar("T")


class DecodeSlots:
    """A non-blocking cap on concurrent large-body decodes (one per app)."""

    def __init__(self, threshold: int, slots: int) -> None:
        self.threshold = threshold
        self.slots = slots
        self.active = 0

    async def run(self, size: int, decode: Callable[[], T]) -> T:
        """``decode()`` inline for a body of ``size`` bytes up to the threshold; above it, in a worker
        thread if a slot is free, else Overloaded (503)."""
        if size <= self.threshold:
            return decode()
        if self.active >= self.slots:
            raise Overloaded(
                f"the gateway is decoding {self.active} large request bodies already (GATEWAY_LARGE_DECODES_MAX); "
                "retry shortly"
            )
        # No await between the check and here: no other request can take the slot in between.
        self.active += 1
        future = asyncio.get_running_loop().run_in_executor(None, contextvars.copy_context().run, decode)
        # The slot is freed when the thread finishes, not when a client that went away cancels the
        # request: the decode goes on in its thread until then, and still holds its memory.
        future.add_done_callback(self._release)
        return await asyncio.shield(future)

    def _release(self, _: object) -> None:
        self.active -= 1
