"""The gateway's services are one typed object; the old app.state attributes are the same objects."""

from __future__ import annotations

from gateway.rollouts.service import RolloutService
from gateway.services import Services


def test_one_services_object_holds_what_the_handlers_use(client):
    services = client.app.state.services
    assert isinstance(services, Services)
    assert isinstance(services.rollouts, RolloutService)
    assert services.guard is services.rollouts.guard
    for name in Services.__dataclass_fields__:  # kept while other modules move over
        assert getattr(client.app.state, name) is getattr(services, name)
