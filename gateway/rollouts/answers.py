"""What the rollout service answers, as typed values: the admin API's response models.

The admin routes declare these models, so the OpenAPI schema documents every admin answer; the
JSON is each model's ``body()``, its ``model_dump()`` unless it says otherwise. A field that is left
out of the JSON when it has no value says so (``_OMITTED``); every other field is always present,
``null`` included (``DeployAnswer``'s ``canary`` is absent from an unchanged deploy's answer).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def _omitted(value: object) -> bool:
    return value is None


_OMITTED: Any = _omitted  # the field is absent from the JSON when it is None


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True)

    def body(self) -> dict[str, Any]:
        """The JSON object of this answer."""
        return self.model_dump()


# --- commands ----------------------------------------------------------------------------------
class StableAnswer(Answer):
    """A promote or a rollback: where ``stable`` points now, and where it pointed before."""

    model: str
    stable: int
    previous: int | None = Field(description="the stable version before; null: there was none")


class TrafficAnswer(Answer):
    """The canary split as set."""

    model: str
    canary: int | None = Field(description="the canary version; null: canary off")
    percent: float = Field(description="share of default-routed requests going to the canary")
    guard: dict[str, float] | None = Field(description="the guard's thresholds, defaults filled in; null: unguarded")


class ShadowAnswer(Answer):
    """The shadow copy as set."""

    model: str
    shadow: int | None = Field(description="the version requests are copied to; null: off")
    percent: float


class LabelAnswer(Answer):
    model: str
    label: str
    version: int


class RetireAnswer(Answer):
    """A retired version: routing no longer sends to it; ``unloaded`` says whether its backend
    unloaded it (``error`` says why not)."""

    model: str
    version: int
    retired: bool
    unloaded: bool
    error: str | None = Field(None, exclude_if=_OMITTED, description="present only when unloading failed")


class DeployAnswer(Answer):
    """A deployed version (``status`` ``deployed``), or the same bytes again (``unchanged``)."""

    model: str
    version: int
    backend: str
    status: Literal["deployed", "unchanged"] = Field(
        description="'deployed', or 'unchanged' when that version holds the same files"
    )
    canary: float | None = Field(
        None, description="the canary share it was given (deployed only; absent when unchanged)"
    )

    def body(self) -> dict[str, Any]:
        """``canary`` is null when deployed without a canary, and absent when unchanged."""
        return self.model_dump(exclude={"canary"} if self.status == "unchanged" else None)


class MinReadyAnswer(Answer):
    """A model's ``min_ready`` as set."""

    model: str
    min_ready: int | None = Field(
        description="replicas of the stack that must have a version ready before it is routed; "
        "null: all current replicas, at least one"
    )


class ApplyAnswer(Answer):
    """A state document applied: whether anything changed, and what."""

    changed: bool
    changes: list[str]


# --- read views ------------------------------------------------------------------------------
class VersionStatus(Answer):
    version: int
    backend: str
    state: str = Field(description="'available' or 'retired' (the registry's word)")
    backend_state: str | None = Field(
        None, exclude_if=_OMITTED, description="what the backend reports (available versions only)"
    )
    backend_error: str | None = Field(None, exclude_if=_OMITTED, description="the backend's error, if any")


class TrafficView(Answer):
    canary: int | None
    percent: float
    sticky_header: str | None


class ShadowView(Answer):
    version: int | None
    percent: float


class ShadowResult(Answer):
    """What the comparisons of one (primary, shadow) version pair found."""

    model: str
    primary_version: int
    shadow_version: int
    requests: int
    compared: int
    agreements: int
    disagreements: int
    errors: int
    dropped: int
    max_abs_diff: float
    mean_max_abs_diff: float
    agreement_ratio: float | None


class ModelStatus(Answer):
    model: str
    versions: list[VersionStatus]
    labels: dict[str, int]
    traffic: TrafficView
    shadow: ShadowView
    shadow_results: list[ShadowResult]
    stable_history: list[int] = Field(description="previous stable versions, most recent last")
    min_ready: int | None = Field(
        None, exclude_if=_OMITTED, description="present only when set: replicas that must have a version ready"
    )


class ReplicaVersionView(Answer):
    """What one replica's agent last reported of one version."""

    model: str
    version: int
    state: str = Field(description="loading, ready or failed")
    error: str | None = Field(None, exclude_if=_OMITTED, description="present only when it failed")
    updated_at: str = Field(description="when the agent reported it, ISO 8601 in UTC")


class ReplicaView(Answer):
    """One backend replica with an agent beside it (``gateway agent``)."""

    replica: str
    stack: str
    address: str = Field(description="the replica's inference address")
    host: str
    heartbeat_age_seconds: float
    versions: list[ReplicaVersionView]


class StatusAnswer(Answer):
    revision: int = Field(description="the registry revision this status was read at")
    models: list[ModelStatus]
    replicas: list[ReplicaView] | None = Field(
        None, exclude_if=_OMITTED, description="backend replicas with agents; present once any has registered"
    )


class HistoryEntry(Answer):
    id: int
    at: str = Field(description="when, ISO 8601 in UTC")
    model: str | None
    action: str
    actor: str
    outcome: str
    message: str
    detail: dict[str, Any]


class HistoryAnswer(Answer):
    history: list[HistoryEntry] = Field(description="newest first")
