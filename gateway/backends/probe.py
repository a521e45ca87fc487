"""A background probe that keeps ``gateway_backend_up`` true even when no traffic flows."""

from __future__ import annotations

import asyncio
import logging

from gateway import metrics
from gateway.routing.router import Router

log = logging.getLogger(__name__)


async def probe_backends(router: Router, interval: float = 5.0) -> None:
    """Every ``interval`` seconds, ask each backend for the state of one of its routed versions."""
    while True:
        seen: set[str] = set()
        for target in router.table.targets():
            kind = target.backend.kind
            if kind in seen:
                continue
            seen.add(kind)
            try:
                status = await target.backend.status(target.model, target.version)
            except Exception:  # a probe must never die; the next round tries again
                log.exception("probing %s failed", kind)
                continue
            # status() reports UNKNOWN exactly when the backend could not be asked.
            metrics.BACKEND_UP.labels(kind).set(0 if status.state == "UNKNOWN" else 1)
        await asyncio.sleep(interval)
