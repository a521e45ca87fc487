"""The front doors' bounded decode: a protocol's decode of a body under the app's ``DecodeSlots``.

Why large bodies are decoded off the event loop, a few at a time: ``gateway.core.limits``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request

from gateway.core.limits import DecodeSlots

T = TypeVar("T")


async def decode_bounded(request: Request, size: int, decode: Callable[[], T]) -> T:
    """Run a protocol's decode of a ``size``-byte body under the app's DecodeSlots."""
    slots: DecodeSlots = request.app.state.decode_slots
    return await slots.run(size, decode)
