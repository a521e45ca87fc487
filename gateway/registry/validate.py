"""Argument checks for the registry's writes; each raises ``RegistryInvalid`` saying what is wrong.

The checks here need no database; the ones that do (does the model, the version exist?) are in
``Tx``. The database's own constraints are a second line of defence, not the error messages.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import PurePosixPath
from typing import Any, Final

from gateway.core import names
from gateway.core.names import MAX_VERSION
from gateway.registry.guardspec import guard_thresholds
from gateway.registry.records import BACKENDS, OUTCOMES, VERSION_STATES, Policy, RegistryInvalid

__all__ = ["MAX_VERSION", "label_name", "model_name", "version_number"]
# An HTTP header name (RFC 9110 token characters).
HEADER_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}")


# Model names, labels and versions follow the gateway's one rule (``gateway.core.names``); its
# ``InvalidName`` becomes the registry's own error here.


def model_name(value: object) -> str:
    """``value`` if it is a valid model name (``gateway.core.names.model_name``)."""
    try:
        return names.model_name(value)
    except names.InvalidName as exc:
        raise RegistryInvalid(str(exc)) from None


def label_name(value: object) -> str:
    """``value`` if it is a valid label name (``gateway.core.names.label_name``)."""
    try:
        return names.label_name(value)
    except names.InvalidName as exc:
        raise RegistryInvalid(str(exc)) from None


def version_number(value: object, what: str = "version") -> int:
    """``value`` if it is a valid version number (``gateway.core.names.version_number``)."""
    try:
        return names.version_number(value, what)
    except names.InvalidName as exc:
        raise RegistryInvalid(str(exc)) from None


def backend(value: object) -> str:
    """``value`` if it names a known backend."""
    if value not in BACKENDS:
        raise RegistryInvalid(f"unknown backend {value!r} (known: {', '.join(sorted(BACKENDS))})")
    assert isinstance(value, str)
    return value


def version_state(value: object) -> str:
    """``value`` if it is a known version state."""
    if value not in VERSION_STATES:
        raise RegistryInvalid(f"unknown version state {value!r} (known: {', '.join(sorted(VERSION_STATES))})")
    assert isinstance(value, str)
    return value


def outcome(value: object) -> str:
    """``value`` if it is a known history outcome."""
    if value not in OUTCOMES:
        raise RegistryInvalid(f"unknown outcome {value!r} (known: {', '.join(sorted(OUTCOMES))})")
    assert isinstance(value, str)
    return value


def artifact(path: object) -> str:
    """``path`` if it is a relative POSIX path inside the model store (no '..', not absolute)."""
    if not isinstance(path, str) or not path or len(path) > 1024 or "\\" in path or "\x00" in path:
        raise RegistryInvalid(f"invalid artifact path {path!r}: a non-empty relative path such as 'mlp/3'")
    parts = PurePosixPath(path).parts
    if path.startswith("/") or ".." in parts or not parts:
        raise RegistryInvalid(f"artifact path {path!r} must be relative to the model store, without '..'")
    return path


def short_text(value: object, what: str, limit: int) -> str:
    """``value`` if it is a non-empty string of at most ``limit`` characters."""
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise RegistryInvalid(f"{what} must be a non-empty string of at most {limit} characters, got {value!r}")
    return value


def json_object(value: object, what: str) -> dict[str, Any]:
    """``value`` if it is a dict that JSON can store as it is (string keys, finite numbers)."""
    if not isinstance(value, dict):
        raise RegistryInvalid(f"{what} must be a JSON object (dict), got {type(value).__name__}")
    try:
        # allow_nan=False: NaN and infinity are not JSON; PostgreSQL would refuse them later.
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryInvalid(f"{what} is not JSON-serializable: {exc}") from None
    if not all(isinstance(k, str) for k in value):
        raise RegistryInvalid(f"{what} must have string keys only")
    return value


def percent(value: object, what: str) -> float:
    """``value`` as a float if it is a finite number between 0 and 100."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RegistryInvalid(f"{what} must be a number between 0 and 100, got {value!r}")
    if not 0.0 <= value <= 100.0:
        raise RegistryInvalid(f"{what} must be between 0 and 100, got {value!r}")
    return float(value)


MAX_MIN_READY: Final = 1000


def min_ready(value: object) -> int | None:
    """``value`` if it is None (the default: all current replicas) or an integer 1-1000."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_MIN_READY:
        raise RegistryInvalid(
            f"min_ready must be an integer from 1 to {MAX_MIN_READY}, or null for all replicas, got {value!r}"
        )
    return value


def policy_shape(policy: object) -> Policy:
    """``policy`` if its fields are well-formed on their own (versions are checked by ``Tx``), its
    guard in the stored form."""
    if not isinstance(policy, Policy):
        raise RegistryInvalid(f"policy must be a Policy, got {type(policy).__name__}")
    percent(policy.canary_percent, "canary_percent")
    percent(policy.shadow_percent, "shadow_percent")
    if policy.canary_version is not None:
        version_number(policy.canary_version, "canary_version")
    elif policy.canary_percent > 0:
        raise RegistryInvalid("canary_percent > 0 needs a canary_version")
    if policy.shadow_version is not None:
        version_number(policy.shadow_version, "shadow_version")
    elif policy.shadow_percent > 0:
        raise RegistryInvalid("shadow_percent > 0 needs a shadow_version")
    header = policy.sticky_header
    if header is not None and not (isinstance(header, str) and HEADER_RE.fullmatch(header)):
        raise RegistryInvalid(f"sticky_header {policy.sticky_header!r} is not a valid HTTP header name")
    if not isinstance(policy.stable_history, tuple | list):
        raise RegistryInvalid("stable_history must be a tuple of versions")
    for v in policy.stable_history:
        version_number(v, "stable_history entry")
    min_ready(policy.min_ready)
    if policy.guard is not None:  # the canary guard's one check (``guardspec``), in its stored form
        policy = replace(policy, guard=guard_thresholds(policy.guard))
    return policy
