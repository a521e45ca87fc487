"""The inference routes' key check, as the FastAPI dependency the front doors declare.

The check itself (``InferenceKeys``) is in ``gateway.core.auth``; this only finds the app's keys.
"""

from __future__ import annotations

from fastapi import Request

from gateway.services import services_of


async def require_inference_key(request: Request) -> None:
    """FastAPI dependency of the inference routers."""
    keys = services_of(request).inference_keys
    keys.check(request)
