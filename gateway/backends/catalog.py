"""Every backend kind's artifact description, gathered from the adapters in one table.

Callers that look at a model store or a deploy upload (discovery, deploys) and the protocols that
name a model's platform ask this table, never compare kind strings themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from gateway.backends.mar import ARTIFACTS as TORCHSERVE
from gateway.backends.tfserving.client import ARTIFACTS as TFSERVING
from gateway.core.kinds import KINDS, Artifacts, Kind

ARTIFACTS: Final[dict[Kind, Artifacts]] = {a.kind: a for a in (TORCHSERVE, TFSERVING)}
"""Kind -> its artifact description, in the order a directory is recognised."""

if tuple(ARTIFACTS) != KINDS:  # pragma: no cover - a kind added without an adapter, or the reverse
    raise ImportError(f"backend kinds {KINDS} and adapters {tuple(ARTIFACTS)} differ")

PLATFORMS: Final[dict[str, str]] = {kind: a.platform for kind, a in ARTIFACTS.items()}
"""Kind -> Open Inference Protocol platform name (``pytorch_torchserve``)."""


def backend_of(directory: Path) -> Kind | None:
    """The kind whose artifact ``directory`` holds (TorchServe's ``.mar`` first), else None."""
    for kind, artifacts in ARTIFACTS.items():
        if artifacts.recognises(directory):
            return kind
    return None
