"""Shadow traffic: copy a share of live requests to another version, compare, never return.

A shadow call runs as a background task after the caller's answer is ready, so it never delays or
changes that answer. Work is bounded: at most ``max_inflight`` shadow calls run at once; a copy
that finds no room is dropped and counted, never queued.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gateway import metrics
from gateway.core.errors import GatewayError
from gateway.core.types import InferenceRequest, InferenceResult, Target

log = logging.getLogger(__name__)


@dataclass
class ShadowStats:
    """What the comparisons of one (model, primary version, shadow version) pair found."""

    model: str
    primary_version: int
    shadow_version: int
    requests: int = 0  # copies started
    compared: int = 0  # copies whose outputs were compared
    agreements: int = 0  # compared copies with the same top-1 class on every row (or within tolerance)
    disagreements: int = 0
    errors: int = 0  # the shadow call failed
    dropped: int = 0  # no room: the shadow budget was spent
    max_abs_diff: float = 0.0
    sum_max_abs_diff: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean_max_abs_diff"] = self.sum_max_abs_diff / self.compared if self.compared else 0.0
        data["agreement_ratio"] = self.agreements / self.compared if self.compared else None
        del data["sum_max_abs_diff"]
        return data


def compare(primary: dict[str, np.ndarray], shadow: dict[str, np.ndarray], tolerance: float) -> tuple[float, bool]:
    """Max absolute difference over the outputs both answers have, and whether they agree.

    Classifier-like outputs (float, [batch, classes]) agree when every row's top-1 class is the
    same; other outputs agree when the max absolute difference is within ``tolerance``.
    """
    worst = 0.0
    agree = True
    for name, a in primary.items():
        b = shadow.get(name)
        if b is None or a.shape != b.shape:
            return float("inf"), False
        if a.dtype.kind not in "fiub" or b.dtype.kind not in "fiub":
            same = a.tolist() == b.tolist()
            agree = agree and same
            continue
        if a.size:
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
        if a.ndim == 2 and a.shape[1] > 1 and a.dtype.kind == "f":
            agree = agree and bool(np.array_equal(a.argmax(axis=1), b.argmax(axis=1)))
        else:
            agree = agree and worst <= tolerance
    return worst, agree


class ShadowRunner:
    """Starts bounded background shadow calls and keeps their comparison statistics."""

    def __init__(self, max_inflight: int = 16, tolerance: float = 1e-4) -> None:
        self.max_inflight = max_inflight
        self.tolerance = tolerance
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self.stats: dict[tuple[str, int, int], ShadowStats] = {}

    def _stats(self, primary: Target, shadow: Target) -> ShadowStats:
        key = (primary.model, primary.version, shadow.version)
        found = self.stats.get(key)
        if found is None:
            found = self.stats[key] = ShadowStats(primary.model, primary.version, shadow.version)
        return found

    def submit(self, primary: Target, shadow: Target, request: InferenceRequest, result: InferenceResult) -> bool:
        """Copy ``request`` to ``shadow`` in the background; False when dropped for lack of room."""
        stats = self._stats(primary, shadow)
        if self._inflight >= self.max_inflight:
            stats.dropped += 1
            self._count(stats, "dropped")
            return False
        self._inflight += 1
        stats.requests += 1
        task = asyncio.get_running_loop().create_task(self._run(primary, shadow, request, result, stats))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(
        self,
        primary: Target,
        shadow: Target,
        request: InferenceRequest,
        result: InferenceResult,
        stats: ShadowStats,
    ) -> None:
        try:
            copy = InferenceRequest(inputs=request.inputs, form="column")
            answer = await shadow.backend.infer(shadow, copy)
            theirs = answer.outputs(shadow.signature)
            ours = result.outputs(primary.signature)
            worst, agree = compare(ours, theirs, self.tolerance)
            stats.compared += 1
            stats.sum_max_abs_diff += worst if np.isfinite(worst) else 0.0
            stats.max_abs_diff = max(stats.max_abs_diff, worst)
            if agree:
                stats.agreements += 1
            else:
                stats.disagreements += 1
            self._count(stats, "agree" if agree else "disagree")
            metrics.SHADOW_ABS_DIFF.labels(stats.model, str(stats.primary_version), str(stats.shadow_version)).observe(
                worst
            )
        except GatewayError as exc:
            stats.errors += 1
            self._count(stats, "error")
            log.info("shadow %s v%d failed: %s", shadow.model, shadow.version, exc.message)
        except Exception:
            stats.errors += 1
            self._count(stats, "error")
            log.exception("shadow %s v%d failed", shadow.model, shadow.version)
        finally:
            self._inflight -= 1

    @staticmethod
    def _count(stats: ShadowStats, outcome: str) -> None:
        metrics.SHADOW_REQUESTS.labels(
            stats.model, str(stats.primary_version), str(stats.shadow_version), outcome
        ).inc()

    def for_model(self, model: str) -> list[dict[str, Any]]:
        return [s.as_dict() for (m, _, _), s in sorted(self.stats.items()) if m == model]

    async def drain(self, seconds: float = 5.0) -> None:
        """Wait for running shadow calls (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=seconds)
