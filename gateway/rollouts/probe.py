"""A background probe of the backends: keeps ``gateway_backend_up`` true even when no traffic
flows, and has a backend that restarted load again the versions the registry says it serves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway import metrics
from gateway.core.errors import GatewayError
from gateway.core.kinds import Kind
from gateway.routing.router import Router

log = logging.getLogger(__name__)

Restore = Callable[[Kind], Awaitable[object]]


async def probe_backends(router: Router, restore: Restore | None = None, interval: float = 5.0) -> None:
    """Every ``interval`` seconds (the first time after one interval), ask each backend for the state
    of one of its routed versions; when it answers, let ``restore`` load again what it lost."""
    while True:
        await asyncio.sleep(interval)
        seen: set[Kind] = set()
        for target in router.table.targets():
            kind = target.backend.kind
            if kind in seen:
                continue
            seen.add(kind)
            try:
                status = await target.backend.status(target.model, target.version)
                # status() reports UNKNOWN exactly when the backend could not be asked.
                up = status.state != "UNKNOWN"
                metrics.BACKEND_UP.labels(kind).set(1 if up else 0)
                if up and restore is not None:
                    await restore(kind)
            except GatewayError as exc:  # e.g. a reload the backend refused: the next round tries again
                log.warning("probing %s: %s", kind, exc.message)
            except Exception:  # a probe must never die; the next round tries again
                log.exception("probing %s failed", kind)
