"""The registry's value types: what the store returns and what callers hand to it.

Every record is a frozen dataclass, so a ``Snapshot`` can be shared between threads and kept as
the basis of a routing table without anyone changing it underneath.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from gateway.core.kinds import KINDS

BACKENDS: Final = frozenset(KINDS)
"""The serving backends a version can live on (``gateway.core.kinds.Kind``)."""

VERSION_STATES: Final = frozenset({"available", "retired"})
"""The states of a version: ``available`` can be routed to, ``retired`` is kept for history."""

OUTCOMES: Final = frozenset({"ok", "failed"})
"""The outcomes a history row can record."""


class RegistryInvalid(ValueError):
    """A registry write's argument breaks a rule (unknown model, missing version, bad percent...).

    The message says what is wrong. The registry's checks raise only this (a ``ValueError``, so
    older callers still catch it); the rollout service answers it, and nothing else, with a 400,
    so a programming error inside a change can never pass for a client's mistake.
    """


class RegistryUnavailable(Exception):
    """The registry database cannot be reached (refused, gone, timed out or busy for too long).

    The message names the database (password masked) and the cause; callers usually turn it into
    a 503 and retry later. Nothing was written when this is raised from a write.
    """


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """One version of a model: where its artifact lies, which backend serves it, its state."""

    model: str
    version: int
    backend: str
    artifact: str
    state: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Policy:
    """How a model's traffic is split beyond its labels.

    ``canary_percent`` of requests (0-100) go to ``canary_version``; ``sticky_header`` names the
    request header whose value keeps a client on one side of the split. ``shadow_percent`` of
    requests are mirrored to ``shadow_version``. ``stable_history`` lists previous stable
    versions, most recent last (what a rollback goes back to). ``guard`` holds the thresholds of
    a guarded canary. ``min_ready`` is how many of the stack's replicas must report a version
    ready before a deploy routes it (None: all current replicas, at least one). Hashable as long
    as ``guard`` is None.
    """

    canary_version: int | None = None
    canary_percent: float = 0.0
    sticky_header: str | None = None
    shadow_version: int | None = None
    shadow_percent: float = 0.0
    stable_history: tuple[int, ...] = ()
    guard: dict[str, Any] | None = None
    min_ready: int | None = None


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A model with all its versions (every state), its labels and its traffic policy."""

    name: str
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole registry as of one committed ``revision``."""

    revision: int
    models: dict[str, ModelRecord]


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One entry of the append-only audit history; ``at`` is timezone-aware UTC."""

    id: int
    at: datetime
    model: str | None
    action: str
    actor: str
    outcome: str
    message: str
    detail: dict[str, Any]
