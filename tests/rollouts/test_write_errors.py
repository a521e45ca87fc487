"""Only the registry's own validation error becomes a 400; any other error in a change stays a bug."""

from __future__ import annotations

from functools import partial

import pytest

from gateway.core.errors import BadRequest
from gateway.registry import RegistryInvalid, Tx


def _write(client, change) -> None:
    service = client.app.state.rollouts
    client.portal.call(partial(service.write, actor="test", action="label", model="toy", change=change))


def test_a_registry_rule_broken_inside_a_change_is_a_400_naming_it(client):
    def change(tx: Tx) -> None:
        tx.set_label("toy", "stable", 99)

    with pytest.raises(BadRequest, match="model 'toy' has no version 99"):
        _write(client, change)


def test_a_value_error_from_a_bug_inside_a_change_is_not_a_client_error(client):
    def change(tx: Tx) -> None:
        int("not a number")  # a programming error, not a rule the client broke

    with pytest.raises(ValueError, match="invalid literal") as caught:
        _write(client, change)
    assert not isinstance(caught.value, (BadRequest, RegistryInvalid))
    assert client.get("/v1/models/toy").status_code == 200  # nothing was changed, routing still serves


def test_registry_validation_errors_are_value_errors_for_older_callers():
    assert issubclass(RegistryInvalid, ValueError)
