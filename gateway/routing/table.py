"""The in-memory routing table: (model, version | label | nothing) -> one ``Target``.

Resolving is a dictionary look-up on an immutable snapshot; a change builds a new table and swaps
the reference, so a request sees one consistent table from start to end.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.backends.base import Target
from gateway.errors import BadRequest, NotFound

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def parse_version(text: str) -> int:
    """A version from a URL segment: a positive integer, else a 400 that says so."""
    if not text.isdigit() or int(text) < 1 or len(text) > 18:
        raise BadRequest(f"version must be a positive integer, got '{text[:40]}'")
    return int(text)


@dataclass(frozen=True, slots=True)
class Resolved:
    """A routed request: where it goes and through which label (if any) it got there."""

    target: Target
    label: str | None


@dataclass(frozen=True)
class ModelRoutes:
    """The versions and labels of one model."""

    name: str
    versions: Mapping[int, Target]
    labels: Mapping[str, int] = field(default_factory=dict)

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
            known = ", ".join(sorted(self.labels)) or "none"
            raise NotFound(f"model '{self.name}' has no label '{label}' (labels: {known})") from None

    def default(self) -> Resolved:
        """The version a request that names none gets: ``stable``, else the highest version."""
        if "stable" in self.labels:
            return Resolved(self.label("stable"), "stable")
        if not self.versions:
            raise NotFound(f"model '{self.name}' has no routable version")
        return Resolved(self.versions[max(self.versions)], None)


class RoutingTable:
    """An immutable snapshot of every model's routes."""

    def __init__(self, models: Mapping[str, ModelRoutes] | None = None) -> None:
        self.models: dict[str, ModelRoutes] = dict(models or {})

    def model(self, name: str) -> ModelRoutes:
        try:
            return self.models[name]
        except KeyError:
            raise NotFound(f"model '{name[:128]}' not found") from None

    def resolve(self, model: str, version: int | None = None, label: str | None = None) -> Resolved:
        """Route a request by explicit version, by label, or by the model's default."""
        routes = self.model(model)
        if version is not None:
            return Resolved(routes.version(version), None)
        if label is not None:
            return Resolved(routes.label(label), label)
        return routes.default()

    def targets(self) -> list[Target]:
        return [t for m in self.models.values() for t in m.versions.values()]
