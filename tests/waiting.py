"""Waiting on the event a test is about, instead of sleeping and hoping it has happened."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], what: str, timeout: float = 30.0, interval: float = 0.02) -> T:
    """Call ``check`` until it returns something truthy and return that; fail naming ``what``.

    ``timeout`` is a ceiling for a broken build, not a performance claim: on a healthy machine the
    condition holds long before it, on a loaded one it still holds before it.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout:g}s (last: {result!r})")
        time.sleep(interval)
