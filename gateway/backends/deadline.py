"""The caller's deadline, handed to the backend call it is waiting for.

A gRPC client sends its deadline with each call; the gRPC doors set ``DEADLINE`` (a
``time.monotonic()`` instant) for the call's task, and the adapters bound their backend call by it,
so the backend stops working on an answer nobody waits for. Unset (REST), an adapter's own timeout
holds alone.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

DEADLINE: ContextVar[float | None] = ContextVar("gateway_deadline", default=None)

#: The least time a backend call is given: a deadline already past still makes one (short) call,
#: which then fails as a timeout, the way the client expects.
_FLOOR = 0.001


def within(timeout: float) -> float:
    """``timeout`` seconds, or less: what is left of the caller's deadline, if it set one."""
    deadline = DEADLINE.get()
    if deadline is None:
        return timeout
    return max(min(timeout, deadline - time.monotonic()), _FLOOR)
