"""Bounded work in front of each backend: an in-flight cap, a circuit breaker, a retry budget.

- In-flight cap: past ``max_inflight`` calls to one backend, the gateway answers 503 with
  ``Retry-After`` at once instead of queueing without bound.
- Circuit breaker: after ``failure_threshold`` consecutive failures to reach a backend (503/504
  class), calls fail fast with 503 for ``cooldown`` seconds; then one probe call goes through, and
  its success closes the circuit.
- Retry budget: a retry (only ever of a call that never reached the backend) spends a token;
  each call earns ``ratio`` of one, so retries stay a bounded share of recent traffic.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway import metrics
from gateway.core.errors import BackendTimeout, BackendUnavailable

T = TypeVar("T")


class RetryBudget:
    """A token bucket: each call adds ``ratio`` tokens (up to ``cap``); a retry costs one.
    A ratio of 0 allows no retry at all (the bucket starts empty and stays so)."""

    def __init__(self, ratio: float = 0.1, cap: float = 10.0) -> None:
        self.ratio = ratio
        self.cap = cap if ratio > 0 else 0.0
        self.tokens = self.cap

    def earn(self) -> None:
        self.tokens = min(self.cap, self.tokens + self.ratio)

    def spend(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def _backend_up(kind: str) -> Callable[[int], None]:
    """Sets ``gateway_backend_up`` of ``kind``; its series is looked up at the first call (a success
    sets it on every call, so not per call), and only then exposed."""
    child: Any = None

    def up(value: int) -> None:
        nonlocal child
        if child is None:
            child = metrics.BACKEND_UP.labels(kind)
        child.set(value)

    return up


class BackendGuard:
    """Caps in-flight calls and breaks the circuit to one backend."""

    def __init__(
        self,
        kind: str,
        *,
        max_inflight: int = 256,
        failure_threshold: int = 5,
        cooldown: float = 5.0,
        up: Callable[[int], None] | None = None,
    ) -> None:
        """``failure_threshold`` 0: no breaker (only the cap). ``up`` is told 1 or 0 when the
        circuit closes or opens (default: ``gateway_backend_up`` of ``kind``)."""
        self.kind = kind
        self._up = up or _backend_up(kind)
        self.max_inflight = max_inflight
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.inflight = 0
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        """``closed`` (normal), ``open`` (failing fast) or ``half-open`` (a probe may pass)."""
        if self.opened_at is None:
            return "closed"
        return "open" if time.monotonic() - self.opened_at < self.cooldown else "half-open"

    def _admit(self) -> bool:
        state = self.state
        if state == "open" or (state == "half-open" and self._probing):
            assert self.opened_at is not None
            wait = max(1, round(self.cooldown - (time.monotonic() - self.opened_at)))
            raise BackendUnavailable(
                f"{self.kind}: circuit open after {self.failures} consecutive failures; "
                f"failing fast, retry in about {wait}s",
                headers={"Retry-After": str(wait)},
            )
        if self.inflight >= self.max_inflight:
            raise BackendUnavailable(
                f"{self.kind}: {self.max_inflight} requests already in flight (the limit); retry shortly"
            )
        probe = state == "half-open"
        self._probing = self._probing or probe
        return probe

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` if admitted; count its outcome for the breaker."""
        probe = self._admit()
        self.inflight += 1
        try:
            result = await fn()
        except (BackendUnavailable, BackendTimeout):
            self._failed()
            raise
        finally:
            self.inflight -= 1
            if probe:
                self._probing = False
        self._succeeded()
        return result

    def _failed(self) -> None:
        self.failures += 1
        if self.failure_threshold and self.failures >= self.failure_threshold:
            self.opened_at = time.monotonic()  # (re)open: a failed probe restarts the cool-down
            self._up(0)

    def _succeeded(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._up(1)
