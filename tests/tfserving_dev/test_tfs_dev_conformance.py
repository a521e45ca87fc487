"""Conformance with TF Serving 2.20 where the gateway depends on it (issue #11, "Why" item 2).

One server for the module, started with slow polling (2 s) and fast, few load retries, so
that "not yet" windows are wide enough to observe. Each test cites the real source file.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2
from tensorflow_serving.config import model_server_config_pb2

from .helpers import AVAILABLE, END, ServerProcess, start_server, wait_for, wait_until_serving

pytestmark = pytest.mark.e2e

LOADING = get_model_status_pb2.ModelVersionStatus.State.Value("LOADING")
POLL_SECONDS = 2
RETRIES = 2
RETRY_INTERVAL_MICROS = 2_000_000


class Store:
    """This module's own base paths: `linear` (v1; v2 on disk) and a `marker` model."""

    def __init__(self, root: Path, saved_model: Path) -> None:
        self.root = root
        self.saved_model = saved_model
        self.marker_version = 1
        for name, version in (("linear", 1), ("linear", 2), ("marker", 1)):
            shutil.copytree(saved_model, root / name / str(version))

    def config(
        self, *extra: tuple[str, Path | str, list[int] | None], drop: str = ""
    ) -> model_server_config_pb2.ModelServerConfig:
        """`linear` {specific [1]} and `marker` {latest}, plus (name, base_path, specific)."""
        result = model_server_config_pb2.ModelServerConfig()
        base = [("linear", self.root / "linear", [1]), ("marker", self.root / "marker", None)]
        models = [m for m in base if m[0] != drop] + list(extra)
        for name, base_path, specific in models:
            model = result.model_config_list.config.add(
                name=name, base_path=str(base_path), model_platform="tensorflow"
            )
            if specific is not None:
                model.model_version_policy.specific.versions.extend(specific)
        return result

    def broken(self, name: str) -> Path:
        """A base path whose version 1 holds a saved_model.pb that is not a protobuf."""
        (self.root / name / "1").mkdir(parents=True)
        (self.root / name / "1" / "saved_model.pb").write_bytes(b"\xffdefinitely not a proto")
        return self.root / name


@pytest.fixture(scope="module")
def store(model_paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("conformance-store"), model_paths["linear"] / "1")


@pytest.fixture(scope="module")
def server(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("conformance-server")
    (workdir / "models.config").write_text(text_format.MessageToString(store.config()))
    proc = start_server(
        [
            f"--model_config_file={workdir / 'models.config'}",
            f"--file_system_poll_wait_seconds={POLL_SECONDS}",
            f"--max_num_load_retries={RETRIES}",
            f"--load_retry_interval_micros={RETRY_INTERVAL_MICROS}",
        ],
        workdir / "server.log",
    )
    try:
        wait_until_serving(proc, {"linear": {1: AVAILABLE}, "marker": {1: AVAILABLE}})
        yield proc
    finally:
        proc.stop()


def just_after_a_poll(server: ServerProcess, store: Store) -> None:
    """Return right after the source polled: add a marker version and wait until it loads.

    The next poll is then about POLL_SECONDS away, so a check made now cannot race it.
    """
    store.marker_version += 1
    shutil.copytree(store.saved_model, store.root / "marker" / str(store.marker_version))
    wait_for(lambda: server.states("marker").get(store.marker_version) == AVAILABLE, 30, "marker version")


def version_status(server: ServerProcess, name: str, version: int) -> get_model_status_pb2.ModelVersionStatus:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    request.model_spec.version.value = version
    (status,) = server.models.GetModelStatus(request, timeout=10).model_version_status
    return status


def test_a_new_version_of_a_configured_model_is_not_found_until_the_next_poll(
    server: ServerProcess, store: Store
) -> None:
    # server_core.cc AddModelsViaModelConfigList waits only for new models, and
    # file_system_storage_path_source.cc UpdateConfig does not poll: version 2 is found
    # at the next periodic poll and loaded on the manager's tick.
    just_after_a_poll(server, store)
    server.reload(store.config(("linear", store.root / "linear", [1, 2]), drop="linear"))
    with pytest.raises(grpc.RpcError) as info:
        version_status(server, "linear", 2)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "Could not find version 2 of model linear"
    wait_for(lambda: server.states("linear") == {2: AVAILABLE, 1: AVAILABLE}, 30, "version 2 found and loaded")
    server.reload(store.config())


def test_a_broken_saved_model_is_retried_while_loading_then_end_with_the_error(
    server: ServerProcess, store: Store
) -> None:
    # loader_harness.cc Load() runs util/retrier.cc Retry(): 1 + max_num_load_retries
    # attempts, load_retry_interval_micros apart, LOADING meanwhile; then END (kError).
    base = store.broken("broken")
    with ThreadPoolExecutor(1) as pool:
        reload = pool.submit(server.reload, store.config(("broken", base, None)))
        wait_for(lambda: server.states("broken") == {1: LOADING}, 30, "broken LOADING")
        loading = version_status(server, "broken", 1)
        assert loading.status.error_code == 0  # no error while retries remain
        wait_for(
            lambda: "Retrying of Loading servable: {name: broken version: 1} retry: 1" in server.log(), 30, "1st retry"
        )
        assert server.states("broken") == {1: LOADING}
        with pytest.raises(grpc.RpcError) as info:
            reload.result(timeout=60)  # the reload that added the model waited for it
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    assert info.value.details().startswith(
        "1 model(s) did not become available: {{{name: broken version: 1} due to error: "
    )
    ended = version_status(server, "broken", 1)
    assert ended.state == END
    assert ended.status.error_code != 0
    assert "saved_model.pb" in ended.status.error_message
    status, answer = server.http("GET", "/v1/models/broken")  # the REST view of the same
    assert status == 200
    assert answer["model_version_status"][0]["state"] == "END"
    assert answer["model_version_status"][0]["status"]["error_code"] != "OK"
    assert server.log().count("Loading servable: {name: broken version: 1} failed") == 1 + RETRIES
    assert f"exhausted max_num_retries: {RETRIES}" in server.log()
    server.reload(store.config())


def test_a_load_that_fails_is_retried_and_succeeds_once_the_files_are_fixed(
    server: ServerProcess, store: Store
) -> None:
    base = store.broken("healing")
    with ThreadPoolExecutor(1) as pool:
        reload = pool.submit(server.reload, store.config(("healing", base, None)))
        wait_for(lambda: "Loading servable: {name: healing version: 1} failed" in server.log(), 30, "a failure")
        # Fix the export during the retry interval: the next attempt loads it.
        shutil.copytree(store.saved_model / "variables", base / "1" / "variables")
        shutil.copy(store.saved_model / "saved_model.pb", base / "1" / "saved_model.pb")
        assert reload.result(timeout=60).status.error_code == 0
    assert server.states("healing") == {1: AVAILABLE}
    server.reload(store.config())


def test_a_relative_base_path_is_rejected(server: ServerProcess, store: Store) -> None:
    # server_core.cc ValidateModelConfigList: all base paths must be absolute.
    with pytest.raises(grpc.RpcError) as info:
        server.reload(store.config(("rel", "models/rel", None)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "Expected model rel to have an absolute path or URI; got base_path()=models/rel"
    assert server.states("rel") == {}


def test_a_reload_adding_a_model_blocks_without_timeout_and_later_reloads_queue(
    server: ServerProcess, store: Store
) -> None:
    # server_core.cc: ReloadConfig holds config_mu_ while WaitUntilModelsAvailable waits,
    # with servable_state_waiter_timeout = InfiniteDuration.
    (store.root / "late").mkdir()
    config = store.config(("late", store.root / "late", None))
    request = model_management_pb2.ReloadConfigRequest(config=config)
    calls = server.models.HandleReloadConfigRequest
    first = calls.future(request, timeout=POLL_SECONDS * 3)  # no version yet: waits
    with pytest.raises(grpc.RpcError) as info:
        first.result()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server still waits and holds the config lock: a reload that changes nothing
    # queues behind it, although it has nothing to wait for itself.
    with pytest.raises(grpc.RpcError) as info:
        calls(request, timeout=POLL_SECONDS)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    shutil.copytree(store.saved_model, store.root / "late" / "1")
    wait_for(lambda: server.states("late") == {1: AVAILABLE}, 30, "late loaded")
    assert calls(request, timeout=30).status.error_code == 0  # the lock is free again
    server.reload(store.config())


def test_no_config_is_invalid_but_an_empty_model_list_unloads_everything(server: ServerProcess, store: Store) -> None:
    # model_service_impl.cc: only a ModelConfigList is accepted; "no config" is refused.
    with pytest.raises(grpc.RpcError) as info:
        server.models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == (
        "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently supported"
    )
    assert server.states("linear").get(1) == AVAILABLE  # nothing changed

    empty = model_server_config_pb2.ModelServerConfig()
    empty.model_config_list.SetInParent()
    assert server.reload(empty).status.error_code == 0
    wait_for(lambda: server.states("linear").get(1) == END, 30, "linear unloaded")
    wait_for(lambda: server.states("marker").get(store.marker_version) == END, 30, "marker unloaded")
