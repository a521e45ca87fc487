"""The gateway's services, in one typed object built once by ``create_app``.

Route handlers and middleware reach them through ``services_of(request)``, which is typed, instead
of reading loose ``app.state`` attributes. (During the move, ``create_app`` also sets the old
attributes from this object, for the modules that still read them.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

if TYPE_CHECKING:  # annotations only: importing these here would tie this module into cycles
    from gateway.backends.resilience import BackendGuard
    from gateway.core.auth import Authenticator, InferenceKeys
    from gateway.core.limits import DecodeSlots
    from gateway.registry.store import RegistryStore
    from gateway.rollouts.deploy import Deployer
    from gateway.rollouts.service import RolloutService
    from gateway.routing.guard import CanaryGuard
    from gateway.routing.router import Router
    from gateway.routing.shadow import ShadowRunner
    from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request handler may need, wired once per app."""

    settings: Settings
    router: Router
    registry: RegistryStore
    shadow: ShadowRunner
    rollouts: RolloutService
    guard: CanaryGuard
    deployer: Deployer
    auth: Authenticator
    decode_slots: DecodeSlots
    inference_keys: InferenceKeys
    backend_guards: dict[str, BackendGuard]


def services_of(connection: HTTPConnection) -> Services:
    """The services of the app serving ``connection`` (a request or a websocket)."""
    services: Services = connection.app.state.services
    return services
