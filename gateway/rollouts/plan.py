"""One model's routing state as one value, and the pure plan of every routing command.

``RoutingState`` is what a routing command changes: the model's labels and its traffic policy.
``plan(record, command)`` computes the new state from the model as the registry holds it, and
checks it with the registry's own rules, without writing anything: it raises ``NotFound`` or
``Conflict`` when the command cannot apply, ``RegistryInvalid`` when the new state breaks a registry
rule. A dry run is a plan; a change writes the planned state (``write_state``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.core.errors import BadRequest, Conflict, NotFound
from gateway.registry import validate as check
from gateway.registry.records import ModelRecord, Policy, RegistryInvalid
from gateway.registry.store import Tx


@dataclass(frozen=True, slots=True)
class RoutingState:
    """One model's labels (label -> version) and traffic policy."""

    labels: Mapping[str, int]
    policy: Policy

    @classmethod
    def of(cls, record: ModelRecord) -> RoutingState:
        return cls(dict(record.labels), record.policy)


# --- commands --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Promote:
    """``stable`` moves to the canary (or ``version``); the canary share goes to 0."""

    version: int | None = None


@dataclass(frozen=True, slots=True)
class Rollback:
    """``stable`` moves back to the previous stable version still available."""


@dataclass(frozen=True, slots=True)
class SetTraffic:
    """``percent`` of the default-routed requests go to ``canary`` (None: canary off)."""

    canary: int | None
    percent: float
    sticky_header: str | None = None
    guard: dict[str, float] | None = None


@dataclass(frozen=True, slots=True)
class SetShadow:
    """``percent`` of the requests are copied to ``version`` (None: shadow off)."""

    version: int | None
    percent: float


@dataclass(frozen=True, slots=True)
class SetLabel:
    """Label ``name`` points at ``version``."""

    name: str
    version: int


@dataclass(frozen=True, slots=True)
class CutCanary:
    """The guard tripped: the share of ``canary`` (if it is still the canary) goes to 0."""

    canary: int


@dataclass(frozen=True, slots=True)
class SetMinReady:
    """How many of the stack's replicas must have a version ready before it is routed (None: all)."""

    min_ready: int | None


@dataclass(frozen=True, slots=True)
class Desired:
    """The state a state document asks for: exactly these labels, this traffic and shadow (and
    ``min_ready``: None is the default)."""

    labels: Mapping[str, int] = field(default_factory=dict)
    canary: int | None = None
    percent: float = 0.0
    sticky_header: str | None = None
    shadow_version: int | None = None
    shadow_percent: float = 0.0
    min_ready: int | None = None


Command = Promote | Rollback | SetTraffic | SetShadow | SetLabel | CutCanary | SetMinReady | Desired


@dataclass(frozen=True, slots=True)
class Plan:
    """The new state, what the history says about it, and the command's facts for its answer."""

    state: RoutingState
    message: str = ""
    detail: dict[str, Any] | None = None
    facts: dict[str, Any] = field(default_factory=dict)


# --- the plan --------------------------------------------------------------------------------
def available(record: ModelRecord, version: int) -> None:
    """NotFound unless ``record`` has ``version`` available."""
    stored = record.versions.get(version)
    if stored is None or stored.state != "available":
        raise NotFound(f"model '{record.name}' has no available version {version}")


def plan(record: ModelRecord, command: Command) -> Plan:
    """The state ``command`` leads to from ``record``; pure (nothing is read or written)."""
    planned = _plan(record, RoutingState.of(record), command)
    return replace(planned, state=checked(record, planned.state))


def checked(record: ModelRecord, state: RoutingState) -> RoutingState:
    """``state`` if the registry would take it for ``record`` (its policy in the stored form),
    else ``RegistryInvalid`` (the same checks as ``Tx.set_label`` and ``Tx.set_policy``)."""
    for name, version in state.labels.items():
        check.label_name(name)
        if check.version_number(version) not in record.versions:
            raise RegistryInvalid(f"model '{record.name}' has no version {version} (version)")
    policy = check.policy_shape(state.policy)
    for what, routed in (("canary_version", policy.canary_version), ("shadow_version", policy.shadow_version)):
        if routed is not None and routed not in record.versions:
            raise RegistryInvalid(f"model '{record.name}' has no version {routed} ({what})")
    return replace(state, policy=policy)


def _plan(record: ModelRecord, state: RoutingState, command: Command) -> Plan:
    labels = dict(state.labels)
    policy = state.policy
    match command:
        case Promote(version):
            target = version if version is not None else policy.canary_version or labels.get("canary")
            if target is None:
                raise Conflict(f"model '{record.name}' has no canary to promote; name a version")
            available(record, target)
            old = labels.get("stable")
            history = policy.stable_history
            if old is not None and old != target:
                history = (*history, old)
            labels["stable"] = target
            labels.pop("canary", None)
            policy = replace(policy, canary_version=None, canary_percent=0.0, stable_history=history)
            facts = {"stable": target, "previous": old}
            return Plan(RoutingState(labels, policy), f"stable {old} -> {target}", facts=facts)
        case Rollback():
            current = labels.get("stable")
            earlier = list(policy.stable_history)
            while earlier:
                candidate = earlier.pop()
                stored = record.versions.get(candidate)
                if candidate != current and stored is not None and stored.state == "available":
                    labels["stable"] = candidate
                    labels.pop("canary", None)
                    policy = replace(policy, canary_version=None, canary_percent=0.0, stable_history=tuple(earlier))
                    return Plan(
                        RoutingState(labels, policy),
                        f"stable {current} -> {candidate}",
                        {"from": current, "to": candidate},
                        {"stable": candidate, "previous": current},
                    )
            raise Conflict(f"model '{record.name}' has no previous stable version to roll back to")
        case SetTraffic(canary, percent, sticky, guard):
            if canary is not None:
                available(record, canary)
                labels["canary"] = canary
            else:
                labels.pop("canary", None)
            share = percent if canary is not None else 0.0
            policy = replace(policy, canary_version=canary, canary_percent=share, sticky_header=sticky, guard=guard)
            message = f"canary {canary} at {share}%" + (f", sticky on {sticky}" if sticky else "")
            return Plan(RoutingState(labels, policy), message)
        case SetShadow(version, percent):
            if version is not None:
                available(record, version)
            share = percent if version is not None else 0.0
            policy = replace(policy, shadow_version=version, shadow_percent=share)
            message = f"shadow {version} at {share}%" if version is not None else "shadow off"
            return Plan(RoutingState(labels, policy), message)
        case SetLabel(name, version):
            available(record, version)
            old = labels.get(name)
            if name == "stable" and old is not None and old != version:
                policy = replace(policy, stable_history=(*policy.stable_history, old))
            labels[name] = version
            return Plan(RoutingState(labels, policy), f"label {name}: {old} -> {version}")
        case CutCanary(canary):
            if policy.canary_version == canary and policy.canary_percent > 0:
                policy = replace(policy, canary_percent=0.0)
            return Plan(RoutingState(labels, policy))
        case SetMinReady(wanted):
            policy = replace(policy, min_ready=wanted)
            said = (
                f"min_ready set to {wanted}" if wanted is not None else "min_ready back to the default (all replicas)"
            )
            return Plan(RoutingState(labels, policy), said, {"min_ready": wanted}, {"min_ready": wanted})
        case Desired():
            return _desired(record, state, command)
    raise TypeError(f"not a routing command: {command!r}")  # pragma: no cover - exhaustive above


def _desired(record: ModelRecord, state: RoutingState, wanted: Desired) -> Plan:
    name = record.name
    for label, number in wanted.labels.items():
        found = record.versions.get(number)
        if found is None or found.state != "available":
            raise BadRequest(f"models.{name}.labels.{label}: version {number} is not available")
    for what, version in (("traffic.canary", wanted.canary), ("shadow.version", wanted.shadow_version)):
        if version is None:
            continue
        stored = record.versions.get(version)
        if stored is None or stored.state != "available":
            raise BadRequest(f"models.{name}.{what}: version {version} is not available")
    policy = replace(
        state.policy,
        canary_version=wanted.canary,
        canary_percent=wanted.percent if wanted.canary is not None else 0.0,
        sticky_header=wanted.sticky_header,
        shadow_version=wanted.shadow_version,
        shadow_percent=wanted.shadow_percent if wanted.shadow_version is not None else 0.0,
        min_ready=wanted.min_ready,
    )
    new = RoutingState(dict(wanted.labels), policy)
    return Plan(new, facts={"changes": changes(name, state, new)})


def changes(name: str, before: RoutingState, after: RoutingState) -> list[str]:
    """What differs between two states of model ``name``, in the words of the history."""
    said = [f"{name} label {label} -> {n}" for label, n in after.labels.items() if before.labels.get(label) != n]
    said += [f"{name} label {label} removed" for label in sorted(set(before.labels) - set(after.labels))]
    if replace(after.policy, min_ready=None) != replace(before.policy, min_ready=None):
        said.append(f"{name} traffic/shadow updated")
    if after.policy.min_ready != before.policy.min_ready:
        said.append(
            f"{name} min_ready -> {after.policy.min_ready if after.policy.min_ready is not None else 'default'}"
        )
    return said


def write_state(tx: Tx, name: str, before: RoutingState, after: RoutingState) -> None:
    """Write what differs from ``before`` to ``after`` in ``tx`` (labels set, removed, policy)."""
    for label, version in after.labels.items():
        if before.labels.get(label) != version:
            tx.set_label(name, label, version)
    for label in sorted(set(before.labels) - set(after.labels)):
        tx.delete_label(name, label)
    if after.policy != before.policy:
        tx.set_policy(name, after.policy)
