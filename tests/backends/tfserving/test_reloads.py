"""The TF Serving adapter and the deploy's ready step against the real server's reload and status
behaviour (tests/backends/tfserving/fake_model_service.py): asynchronous discovery, load retries,
blocking reloads, and the empty model list."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest

from gateway.backends.tfserving.client import TFServingBackend
from gateway.core.errors import BackendTimeout, BackendUnavailable, DeployFailed
from gateway.rollouts.deploy import Deployer
from gateway.settings import Settings
from tests.backends.tfserving.fake_model_service import FakeModelService

AVAILABLE = ("AVAILABLE", "")
LOADING = ("LOADING", "")


@pytest.fixture
async def tf() -> AsyncIterator[tuple[FakeModelService, TFServingBackend]]:
    server = FakeModelService()
    await server.start()
    # Long enough for a loaded CI machine to answer a reload; the timed-out-reload test waits it out.
    adapter = TFServingBackend(server.target, base_path="/models", load_timeout=3.0)
    adapter.busy_poll_seconds = 0.02
    await adapter.start()
    try:
        yield server, adapter
    finally:
        await adapter.close()
        await server.stop()


def deployer(adapter: TFServingBackend, ready: float = 5.0, grace: float = 0.5) -> Deployer:
    settings = Settings(deploy_ready_timeout_seconds=ready, backend_discovery_grace_seconds=grace)
    return Deployer(SimpleNamespace(settings=settings, backends={"tfserving": adapter}))  # type: ignore[arg-type]


def test_an_empty_model_list_is_still_a_model_config_list():
    request = TFServingBackend("127.0.0.1:1", base_path="/models").model_server_config({"mlp": set()})
    assert request.HasField("config") and request.config.WhichOneof("config") == "model_config_list"
    assert list(request.config.model_config_list.config) == []
    assert request.SerializeToString() != b""


async def test_unloading_the_last_version_sends_an_empty_list_the_server_accepts(tf):
    server, adapter = tf
    await adapter.load("mlp", 2, {})
    await adapter.unload("mlp", 2, {"mlp": {2}})
    last = server.configs[-1]
    assert last.config.WhichOneof("config") == "model_config_list"
    assert list(last.config.model_config_list.config) == []


async def test_a_version_the_server_does_not_know_is_not_found_not_end(tf):
    _, adapter = tf
    status = await adapter.status("mlp", 3)
    assert (status.state, status.error) == ("NOT_FOUND", "Could not find version 3 of model mlp")
    assert status.gone and not status.available


async def test_not_found_right_after_a_reload_is_not_yet(tf):
    server, adapter = tf
    # The file-system source finds the version at its next poll: NOT_FOUND, then it loads.
    task = asyncio.create_task(deployer(adapter, grace=30)._wait_ready("mlp", 4, "tfserving"))
    await asyncio.wait_for(server.answered_not_found(2), 10)
    assert not task.done()
    server.script("mlp", 4, ("START", ""), LOADING, AVAILABLE)
    await asyncio.wait_for(task, 10)


async def test_a_version_never_found_fails_after_the_grace_period(tf):
    _, adapter = tf
    with pytest.raises(DeployFailed) as failed:
        await deployer(adapter, ready=60, grace=0.3)._wait_ready("mlp", 4, "tfserving")
    assert failed.value.status_code == 502 and failed.value.step == "ready"
    assert failed.value.message == (
        "deploy failed at step 'ready': tfserving did not find version 4 within 0.3s of loading it "
        "(NOT_FOUND: Could not find version 4 of model mlp)"
    )


async def test_loading_with_retries_is_not_yet_until_the_deadline_then_the_last_error(tf):
    server, adapter = tf
    error = "Failed to load servable mlp version 4: NOT_FOUND: Could not find SavedModel .pb"
    server.script("mlp", 4, LOADING, ("LOADING", error), LOADING)
    with pytest.raises(DeployFailed) as failed:
        await deployer(adapter, ready=0.8, grace=0.1)._wait_ready("mlp", 4, "tfserving")
    assert failed.value.status_code == 504
    assert failed.value.message == (
        f"deploy failed at step 'ready': tfserving did not report version 4 ready within 0.8s "
        f"(state LOADING; last error: {error})"
    )


async def test_end_with_an_error_fails_at_once(tf):
    server, adapter = tf
    server.script("mlp", 4, LOADING, ("END", "Loading servable mlp v4 failed after 5 retries"))
    with pytest.raises(DeployFailed) as failed:
        await deployer(adapter, ready=600)._wait_ready("mlp", 4, "tfserving")
    assert failed.value.status_code == 502
    assert failed.value.message.endswith("could not load version 4: Loading servable mlp v4 failed after 5 retries")


async def test_a_timed_out_reload_is_not_followed_by_reloads_that_queue_behind_it(tf):
    server, adapter = tf
    server.hold.clear()  # adding the model "fresh" blocks the server's reload, lock held
    server.script("fresh", 1, LOADING)
    with pytest.raises(BackendTimeout):
        await adapter.load("fresh", 1, {"mlp": {2}})
    # The deploy's clean-up and another deploy: neither sends a reload that would queue.
    with pytest.raises(BackendUnavailable, match="deferred until it finished: an earlier reload that timed out"):
        await adapter.unload("fresh", 1, {"mlp": {2}})
    with pytest.raises(BackendUnavailable, match=r"not sent: .* still loading fresh v1 \(LOADING\)"):
        await adapter.load("mlp", 3, {"mlp": {2}})
    assert len(server.configs) == 1
    # The server finishes the load: the deferred model list (without "fresh") goes out then.
    server.script("fresh", 1, AVAILABLE)
    server.hold.set()
    await asyncio.wait_for(server.arrived(2), 10)
    deferred = server.configs[1].config.model_config_list.config
    assert [(c.name, list(c.model_version_policy.specific.versions)) for c in deferred] == [("mlp", [2])]
    await adapter.load("mlp", 3, {"mlp": {2}})  # free again
    assert len(server.configs) == 3
