"""The canary guard's thresholds: one type, the admin API's body and the registry's check alike.

``GuardSpec`` checks each threshold's range (the API's body schema and its 400s come from it);
``guard_thresholds`` is the registry's check of a whole guard, which the admin API reaches
through the rollout service: known keys, valid ranges, at least one ratio. It gives the stored
form: every threshold a float, the defaults filled in.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.registry.records import RegistryInvalid


class GuardSpec(BaseModel):
    """Thresholds that set a canary's share to 0 when the canary does worse than stable."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    max_error_ratio: float | None = Field(None, ge=0, le=1, description="canary share of failed calls")
    max_p99_ratio: float | None = Field(None, ge=1, description="canary p99 / stable p99")
    window_seconds: float = Field(60.0, gt=0)
    min_requests: int = Field(20, ge=1)

    def thresholds(self) -> dict[str, float]:
        """The stored form (floats, defaults filled in); RegistryInvalid without any ratio."""
        if self.max_error_ratio is None and self.max_p99_ratio is None:
            raise RegistryInvalid("guard: give max_error_ratio and/or max_p99_ratio")
        stored = {"window_seconds": self.window_seconds, "min_requests": float(self.min_requests)}
        for key in ("max_error_ratio", "max_p99_ratio"):
            value = getattr(self, key)
            if value is not None:
                stored[key] = value
        return stored


KEYS = tuple(GuardSpec.model_fields)


def guard_thresholds(value: object) -> dict[str, float] | None:
    """``value`` (a ``GuardSpec`` or a dict; None: no guard) in its stored form, or
    ``RegistryInvalid`` naming the problem."""
    if value is None:
        return None
    if not isinstance(value, GuardSpec):
        if not isinstance(value, dict):
            raise RegistryInvalid(f"guard must be a JSON object (dict), got {type(value).__name__}")
        unknown = set(value) - set(KEYS)
        if unknown:
            shown = sorted(str(k) for k in unknown)
            raise RegistryInvalid(f"guard: unknown keys {shown} (known: {', '.join(KEYS)})")
        try:
            value = GuardSpec.model_validate(value)
        except ValidationError as exc:
            raise RegistryInvalid(_message(exc)) from None
    return value.thresholds()


def _message(exc: ValidationError) -> str:
    """Each problem as ``guard.<field>: <what is expected>``, as the admin API says it."""
    parts: list[str] = []
    for err in exc.errors():
        where = ".".join(str(p) for p in ("guard", *err.get("loc", ())))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)
