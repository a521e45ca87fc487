"""The in-memory routing table: (model, version | label | nothing) -> one ``Target``.

Resolving is a dictionary look-up on an immutable snapshot; a change builds a new table and swaps
the reference, so a request sees one consistent table from start to end.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.core import names
from gateway.core.errors import BadRequest, NotFound
from gateway.core.types import Target


def parse_version(text: str) -> int:
    """A version from a URL segment: ASCII digits of a positive integer, else a 400 that says so."""
    try:
        return names.parse_version(text)
    except names.InvalidName as exc:
        raise BadRequest(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Resolved:
    """A routed request: where it goes and through which label (if any) it got there."""

    target: Target
    label: str | None


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """How a model's requests that name no version are spread, and what is shadowed."""

    canary_version: int | None = None
    canary_percent: float = 0.0
    sticky_header: str | None = None
    shadow_version: int | None = None
    shadow_percent: float = 0.0
    guard: Mapping[str, float] | None = None


def _bucket(value: str) -> float:
    """A stable position in [0, 100) for a sticky-header value: same value, same version."""
    return (zlib.crc32(value.encode()) % 10_000) / 100.0


@dataclass(frozen=True)
class ModelRoutes:
    """The versions, labels and traffic policy of one model."""

    name: str
    versions: Mapping[int, Target]
    labels: Mapping[str, int] = field(default_factory=dict)
    policy: RoutePolicy = field(default_factory=RoutePolicy)

    def version(self, version: int) -> Target:
        try:
            return self.versions[version]
        except KeyError:
            known = ", ".join(str(v) for v in sorted(self.versions)) or "none"
            raise NotFound(f"model '{self.name}' has no version {version} (versions: {known})") from None

    def label(self, label: str) -> Target:
        try:
            return self.versions[self.labels[label]]
        except KeyError:
            names.require_label_name(label)  # checked on a miss only: the table holds valid names
            known = ", ".join(sorted(self.labels)) or "none"
            raise NotFound(f"model '{self.name}' has no label '{label}' (labels: {known})") from None

    def stable(self) -> Resolved:
        """``stable``, else the highest version."""
        if "stable" in self.labels and self.labels["stable"] in self.versions:
            return Resolved(self.versions[self.labels["stable"]], "stable")
        if not self.versions:
            raise NotFound(f"model '{self.name}' has no routable version")
        return Resolved(self.versions[max(self.versions)], None)

    def default(self, headers: Mapping[str, str] | None = None) -> Resolved:
        """The version a request that names none gets: the canary for its share, else stable.

        With a sticky header, the header's value decides (the same value always lands on the same
        side); without one, or when the request lacks it, a random draw does.
        """
        policy = self.policy
        canary = policy.canary_version
        if canary is not None and policy.canary_percent > 0 and canary in self.versions:
            sticky = headers.get(policy.sticky_header) if headers and policy.sticky_header else None
            draw = _bucket(sticky) if sticky is not None else random.random() * 100.0
            if draw < policy.canary_percent:
                return Resolved(self.versions[canary], "canary")
        return self.stable()

    def shadow_for(self, target: Target) -> Target | None:
        """The version to copy ``target``'s request to, drawn at the shadow share, if any."""
        policy = self.policy
        version = policy.shadow_version
        if version is None or version == target.version or policy.shadow_percent <= 0:
            return None
        if version not in self.versions or random.random() * 100.0 >= policy.shadow_percent:
            return None
        return self.versions[version]


class RoutingTable:
    """An immutable snapshot of every model's routes."""

    def __init__(self, models: Mapping[str, ModelRoutes] | None = None) -> None:
        self.models: dict[str, ModelRoutes] = dict(models or {})

    def model(self, name: str) -> ModelRoutes:
        try:
            return self.models[name]
        except KeyError:
            names.require_model_name(name)  # checked on a miss only: the table holds valid names
            raise NotFound(f"model '{name}' not found") from None

    def resolve(
        self,
        model: str,
        version: int | None = None,
        label: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Resolved:
        """Route a request by explicit version, by label, or by the model's traffic policy."""
        routes = self.model(model)
        if version is not None:
            return Resolved(routes.version(version), None)
        if label is not None:
            return Resolved(routes.label(label), label)
        return routes.default(headers)

    def targets(self) -> list[Target]:
        return [t for m in self.models.values() for t in m.versions.values()]
