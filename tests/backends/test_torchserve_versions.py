"""The TorchServe adapter against TorchServe's version rules (tests/backends/fake_torchserve.py):
its default version follows the gateway's stable one, so that retiring any other version works."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.backends.torchserve import TorchServeBackend
from gateway.core.errors import BackendError
from tests.backends.fake_torchserve import FakeTorchServe
from tests.fakes import write_mar


@pytest.fixture
async def torchserve(tmp_path: Path) -> AsyncIterator[tuple[FakeTorchServe, TorchServeBackend]]:
    store = tmp_path / "store"
    for version in (1, 2, 3):
        write_mar(store / "mlp" / str(version), "mlp", str(version))
    server = FakeTorchServe(store)
    await server.start()
    adapter = TorchServeBackend(server.url, server.url, store=store, load_timeout=10)
    await adapter.start()
    try:
        yield server, adapter
    finally:
        await adapter.close()
        await server.stop()


async def load_all(adapter: TorchServeBackend, *versions: int) -> None:
    for version in versions:
        await adapter.load("mlp", version, {})


async def test_promote_3_promote_2_then_retire_1_unregisters_1(torchserve):
    server, adapter = torchserve
    await load_all(adapter, 1, 2, 3)
    assert server.default("mlp") == "1"  # the first version registered
    await adapter.set_default("mlp", 3)  # promote 3
    await adapter.set_default("mlp", 2)  # promote 2
    await adapter.unload("mlp", 1, {"mlp": {2, 3}})
    assert server.registered("mlp") == ["2", "3"]
    assert server.default("mlp") == "2"
    assert not (adapter.store / "mlp.1.mar").exists()  # type: ignore[operator]


async def test_retiring_the_default_moves_it_to_stable_first(torchserve):
    server, adapter = torchserve
    await load_all(adapter, 1, 2, 3)
    await adapter.set_default("mlp", 2)
    await adapter.set_default("mlp", 1)  # stable is 1 again, and TorchServe's default too
    await adapter.unload("mlp", 3, {"mlp": {1, 2}})
    await adapter.unload("mlp", 2, {"mlp": {1}})
    assert server.registered("mlp") == ["1"] and server.default("mlp") == "1"


async def test_without_a_known_stable_version_the_highest_other_becomes_default(torchserve):
    server, adapter = torchserve
    await load_all(adapter, 1, 2, 3)  # a gateway that restarted knows no stable version yet
    await adapter.unload("mlp", 1, {"mlp": {2, 3}})
    assert server.registered("mlp") == ["2", "3"] and server.default("mlp") == "3"


async def test_the_last_version_and_unknown_versions_unload_quietly(torchserve):
    server, adapter = torchserve
    await load_all(adapter, 2)
    await adapter.unload("mlp", 7, {"mlp": {2}})  # never registered
    await adapter.unload("mlp", 2, {})  # the only one: TorchServe lets its default go
    await adapter.unload("mlp", 2, {})  # twice is harmless
    assert server.registered("mlp") == []
    assert ("DELETE", "mlp 7") not in server.calls


async def test_status_of_an_unregistered_version_is_not_found_not_end(torchserve):
    _, adapter = torchserve
    await load_all(adapter, 1)
    status = await adapter.status("mlp", 2)
    assert (status.state, status.error) == ("NOT_FOUND", "Model version: 2 does not exist for model: mlp")
    assert status.gone and (await adapter.status("mlp", 1)).available


async def test_set_default_of_an_unregistered_version_says_so(torchserve):
    _, adapter = torchserve
    await load_all(adapter, 1)
    with pytest.raises(BackendError, match="Model version 5 does not exist for model mlp"):
        await adapter.set_default("mlp", 5)


async def test_after_torchserve_restarts_the_stable_version_is_default_again(torchserve):
    server, adapter = torchserve
    await load_all(adapter, 1, 2, 3)
    await adapter.set_default("mlp", 3)
    server.restart()
    await load_all(adapter, 1, 2, 3)  # what the gateway's restore does, lowest first
    assert server.default("mlp") == "3"
    await adapter.unload("mlp", 1, {"mlp": {2, 3}})
    assert server.registered("mlp") == ["2", "3"]


async def test_unregister_is_asked_again_when_torchserve_could_not_stop_the_workers(torchserve):
    """TorchServe answers 500/408 "... while cleaning resources", keeps the version and asks for
    the request again: the adapter does, a bounded number of times."""
    server, adapter = torchserve
    await load_all(adapter, 1, 2)
    server.unregister_failures = [500, 408]
    await adapter.unload("mlp", 2, {"mlp": {1}})
    assert server.registered("mlp") == ["1"]
    assert [c for c in server.calls if c[0] == "DELETE"] == [("DELETE", "mlp 2")] * 3


async def test_unregister_gives_up_after_its_attempts_with_torchserves_message(torchserve):
    server, adapter = torchserve
    await load_all(adapter, 1, 2)
    server.unregister_failures = [500, 500, 500]
    with pytest.raises(BackendError, match="Interrupted while cleaning resources"):
        await adapter.unload("mlp", 2, {"mlp": {1}})
    assert server.registered("mlp") == ["1", "2"]
