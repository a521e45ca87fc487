"""The guarded canary: when a canary does worse than stable, its share goes to 0 by itself.

Per model, optional thresholds (``Policy.guard``): ``max_error_ratio`` (the canary's share of
failed backend calls), ``max_p99_ratio`` (the canary's p99 latency relative to stable's), over the
last ``window_seconds``, once the canary has ``min_requests``. Crossing one sets the canary share
to 0 through the rollout service, which writes the reason to the history (action ``guard``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.routing.table import ModelRoutes, Resolved

log = logging.getLogger(__name__)


@dataclass
class _Window:
    samples: deque[tuple[float, float, bool]]

    def recent(self, since: float) -> list[tuple[float, float, bool]]:
        while self.samples and self.samples[0][0] < since:
            self.samples.popleft()
        return list(self.samples)


class CanaryGuard:
    """Watches canary and stable outcomes of each guarded model and trips the guard once."""

    def __init__(self, trip: Callable[[str, int, str], Coroutine[Any, Any, None]]) -> None:
        self._trip = trip
        self._windows: dict[tuple[str, int], _Window] = {}
        self._tripped: set[tuple[str, int]] = set()

    def observe(self, routes: ModelRoutes | None, resolved: Resolved, seconds: float, ok: bool) -> None:
        """Record one default-routed outcome; maybe trip the guard (in the background)."""
        if routes is None or resolved.label not in ("canary", "stable"):
            return
        guard = routes.policy.guard
        canary = routes.policy.canary_version
        if not guard or canary is None or routes.policy.canary_percent <= 0:
            return
        now = time.monotonic()
        key = (routes.name, resolved.target.version)
        window = self._windows.setdefault(key, _Window(deque(maxlen=100_000)))
        window.samples.append((now, seconds, ok))
        if resolved.label == "canary" and (routes.name, canary) not in self._tripped:
            reason = self._verdict(routes.name, canary, routes, guard, now)
            if reason is not None:
                self._tripped.add((routes.name, canary))
                asyncio.get_running_loop().create_task(self._trip(routes.name, canary, reason))

    def reset(self, model: str, version: int) -> None:
        """Arm the guard again (a new canary share was set)."""
        self._tripped.discard((model, version))
        self._windows.pop((model, version), None)

    def _verdict(
        self, model: str, canary: int, routes: ModelRoutes, guard: Mapping[str, float], now: float
    ) -> str | None:
        since = now - guard["window_seconds"]
        mine = self._windows[(model, canary)].recent(since)
        if len(mine) < guard["min_requests"]:
            return None
        errors = sum(1 for _, _, ok in mine if not ok) / len(mine)
        if "max_error_ratio" in guard and errors > guard["max_error_ratio"]:
            return f"canary error ratio {errors:.3f} > {guard['max_error_ratio']:g} over {len(mine)} requests"
        if "max_p99_ratio" in guard:
            stable = routes.stable().target.version
            theirs = self._windows.get((model, stable))
            base = theirs.recent(since) if theirs else []
            if len(base) >= guard["min_requests"]:
                p99 = float(np.percentile([s for _, s, _ in mine], 99))
                p99_stable = float(np.percentile([s for _, s, _ in base], 99))
                if p99_stable > 0 and p99 / p99_stable > guard["max_p99_ratio"]:
                    return (
                        f"canary p99 {p99 * 1000:.1f} ms is {p99 / p99_stable:.1f}x stable's "
                        f"{p99_stable * 1000:.1f} ms (limit {guard['max_p99_ratio']:g}x)"
                    )
        return None
