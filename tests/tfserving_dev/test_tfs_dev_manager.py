"""ServerCore, source and manager rules with a fake loader: fast, no TensorFlow model loads.

Tests that pin timing-sensitive behaviour drive the source's polls and the manager's ticks by
hand (`ServerCore(..., file_system_poll_wait_seconds=-1)` never polls by itself, and the
manage-state thread is not started), so each step is deterministic.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.config import model_server_config_pb2
from tfserving_dev.errors import ServingError
from tfserving_dev.server_core import ServerCore
from tfserving_dev.states import AVAILABLE, END, LOADING

from .helpers import wait_for

CEILING = 60.0  # seconds: what a broken build fails on; a loaded machine still gets there


class FakeLoader:
    """Loads instantly unless told to fail a path (a number of times) or to wait at a gate."""

    def __init__(self) -> None:
        self.failing: dict[str, int] = {}  # path -> failures left (-1: forever)
        self.gates: dict[int, threading.Event] = {}
        self.calls: list[tuple[str, int]] = []

    def __call__(self, name: str, version: int, path: str) -> str:
        self.calls.append((name, version))
        gate = self.gates.get(version)
        if gate is not None:
            gate.wait(10)
        left = self.failing.get(path, 0)
        if left:
            self.failing[path] = left - 1 if left > 0 else left
            raise ServingError(grpc.StatusCode.DATA_LOSS, f"cannot parse {path}")
        return f"{name}:{version}"


def make_versions(base: Path, *versions: int, saved_model: bool = True) -> None:
    for version in versions:
        (base / str(version)).mkdir(parents=True, exist_ok=True)
        if saved_model:
            (base / str(version) / "saved_model.pb").write_bytes(b"")


def config(**models: dict[str, object]) -> model_server_config_pb2.ModelServerConfig:
    result = model_server_config_pb2.ModelServerConfig()
    result.model_config_list.SetInParent()
    for name, options in models.items():
        model = result.model_config_list.config.add(
            name=name, base_path=str(options["base_path"]), model_platform="tensorflow"
        )
        if "specific" in options:
            model.model_version_policy.specific.versions.extend(options["specific"])  # type: ignore[arg-type]
        for label, version in dict(options.get("labels", {})).items():  # type: ignore[call-overload]
            model.version_labels[label] = version
    return result


def states(core: ServerCore, name: str) -> dict[int, int]:
    try:
        return {s.version: s.state for s in core.status(name)}
    except ServingError:
        return {}


def spec(name: str, **kwargs: object) -> model_pb2.ModelSpec:
    result = model_pb2.ModelSpec(name=name)
    if "version" in kwargs:
        result.version.value = int(kwargs["version"])  # type: ignore[call-overload]
    if "label" in kwargs:
        result.version_label = str(kwargs["label"])
    return result


def step(core: ServerCore) -> None:
    """One source poll, then one manager tick (what the two threads do, in order)."""
    core.source.poll_once()
    core.manager.tick()


def reload_in_background(core: ServerCore, cfg: model_server_config_pb2.ModelServerConfig) -> threading.Thread:
    """Run a (blocking) reload on a thread; its error, if any, is kept in `thread.errors`."""
    errors: list[ServingError] = []

    def run() -> None:
        try:
            core.reload_config(cfg)
        except ServingError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


@pytest.fixture
def loader() -> FakeLoader:
    return FakeLoader()


@pytest.fixture
def core(loader: FakeLoader) -> Iterator[ServerCore]:
    """A core on fast threads: polls every 20 ms, ticks every 5 ms, no load retries."""
    result = ServerCore(
        loader, file_system_poll_wait_seconds=0.02, max_num_load_retries=0, manage_state_interval_seconds=0.005
    )
    result.start()
    yield result
    for gate in loader.gates.values():
        gate.set()
    result.stop()


@pytest.fixture
def manual(loader: FakeLoader) -> Iterator[ServerCore]:
    """A core whose polls and ticks the test drives with step()."""
    result = ServerCore(loader, file_system_poll_wait_seconds=-1, max_num_load_retries=2, load_retry_interval_micros=0)
    yield result
    result.stop()


def test_a_new_version_of_a_configured_model_is_unknown_until_polled_and_ticked(
    manual: ServerCore, tmp_path: Path
) -> None:
    make_versions(tmp_path, 1)
    first = reload_in_background(manual, config(m={"base_path": tmp_path, "specific": [1]}))
    wait_for(lambda: (step(manual), not first.is_alive())[1], CEILING, "first config loaded")
    assert states(manual, "m") == {1: AVAILABLE}

    make_versions(tmp_path, 2)
    manual.reload_config(config(m={"base_path": tmp_path, "specific": [1, 2]}))  # returns at once
    with pytest.raises(ServingError) as info:
        manual.status("m", 2)
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert info.value.message == "Could not find version 2 of model m"
    manual.manager.tick()  # the manager knows nothing until the source polls
    assert states(manual, "m") == {1: AVAILABLE}
    manual.source.poll_once()  # queued for the manager's next tick
    assert states(manual, "m") == {1: AVAILABLE}
    manual.manager.tick()
    assert states(manual, "m") == {2: AVAILABLE, 1: AVAILABLE}


def test_a_failed_load_is_retried_while_loading_then_end_with_the_error(
    manual: ServerCore, loader: FakeLoader, tmp_path: Path
) -> None:
    make_versions(tmp_path / "ok", 1)
    make_versions(tmp_path / "bad", 1)
    loader.failing[str(tmp_path / "ok" / "1")] = 2  # succeeds on its last retry
    loader.failing[str(tmp_path / "bad" / "1")] = -1
    cfg = config(ok={"base_path": tmp_path / "ok"}, bad={"base_path": tmp_path / "bad"})
    reload = reload_in_background(manual, cfg)
    wait_for(lambda: manual.source.model_names() == {"ok", "bad"}, CEILING, "config applied to the source")
    manual.source.poll_once()
    loader.gates[1] = threading.Event()
    ticking = threading.Thread(target=manual.manager.tick)  # loads `bad` first (names sorted)
    ticking.start()
    wait_for(lambda: len(loader.calls) == 1, CEILING, "first attempt")
    (status,) = manual.status("bad")
    assert (status.state, status.error_code) == (LOADING, grpc.StatusCode.OK)
    loader.gates[1].set()
    ticking.join(10)
    (status,) = manual.status("bad")
    assert loader.calls == [("bad", 1)] * 3  # one attempt, then max_num_load_retries
    assert (status.state, status.error_code) == (END, grpc.StatusCode.DATA_LOSS)
    assert status.error_message == f"cannot parse {tmp_path / 'bad' / '1'}"

    wait_for(lambda: (manual.manager.tick(), not reload.is_alive())[1], CEILING, "reload returns")
    assert [e.message.split(" due to")[0] for e in reload.errors] == [  # type: ignore[attr-defined]
        "1 servable(s) did not become available: {{{name: bad version: 1}"
    ]
    assert states(manual, "ok") == {1: AVAILABLE}
    assert loader.calls.count(("ok", 1)) == 3
    for _ in range(3):  # still aspired: a failed version is not tried again
        step(manual)
    assert loader.calls.count(("bad", 1)) == 3


def test_latest_policy_keeps_serving_until_the_new_version_is_ready(
    core: ServerCore, loader: FakeLoader, tmp_path: Path
) -> None:
    make_versions(tmp_path, 1)
    make_versions(tmp_path, 7, saved_model=False)  # e.g. a TorchServe .mar directory
    core.reload_config(config(m={"base_path": tmp_path}))
    assert states(core, "m") == {1: AVAILABLE}

    loader.gates[2] = threading.Event()
    make_versions(tmp_path, 2)
    wait_for(lambda: states(core, "m") == {2: LOADING, 1: AVAILABLE}, CEILING, "v2 loading")
    assert core.resolve(spec("m")) == ("m:1", 1)  # still served while 2 loads
    loader.gates[2].set()
    wait_for(lambda: states(core, "m") == {2: AVAILABLE, 1: END}, CEILING, "v1 unloaded")
    assert core.resolve(spec("m")) == ("m:2", 2)


def test_a_failed_version_is_loaded_again_only_when_it_comes_back(
    core: ServerCore, loader: FakeLoader, tmp_path: Path
) -> None:
    make_versions(tmp_path / "a", 1)
    make_versions(tmp_path / "m", 1)
    core.reload_config(config(a={"base_path": tmp_path / "a"}))
    loader.failing[str(tmp_path / "m" / "1")] = 1
    cfg = config(a={"base_path": tmp_path / "a"}, m={"base_path": tmp_path / "m", "specific": [1]})
    with pytest.raises(ServingError):
        core.reload_config(cfg)
    assert states(core, "m") == {1: END}

    core.reload_config(config(a={"base_path": tmp_path / "a"}))  # m leaves the config
    with core.manager.lock:  # and the manager lets go of it (FlushServables)
        assert core.manager.lock.wait_for(lambda: not core.manager.records()["m"][1].managed, CEILING)
    core.reload_config(cfg)  # and comes back: loaded again, now successfully
    assert states(core, "m") == {1: AVAILABLE}
    assert loader.calls.count(("m", 1)) == 2


def test_reload_waits_for_new_models_and_reports_their_failures(
    core: ServerCore, loader: FakeLoader, tmp_path: Path
) -> None:
    make_versions(tmp_path / "a", 1)
    make_versions(tmp_path / "b", 1)
    loader.failing[str(tmp_path / "b" / "1")] = -1
    core.reload_config(config(a={"base_path": tmp_path / "a"}))
    assert states(core, "a") == {1: AVAILABLE}
    with pytest.raises(ServingError) as info:
        core.reload_config(config(a={"base_path": tmp_path / "a"}, b={"base_path": tmp_path / "b"}))
    assert info.value.code == grpc.StatusCode.UNKNOWN
    assert info.value.message == (
        # ServableId::DebugString() brings its own braces: three in a row, as in TF Serving.
        "1 model(s) did not become available: {{{name: b version: 1} due to error: "
        f"DATA_LOSS: cannot parse {tmp_path / 'b' / '1'}}}, }}"
    )

    core.reload_config(config(b={"base_path": tmp_path / "b"}))  # drops a, on the next ticks
    wait_for(lambda: states(core, "a") == {1: END}, CEILING, "a unloaded")
    with pytest.raises(ServingError) as info:
        core.resolve(spec("a"))
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_first_config_fails_when_a_model_fails(core: ServerCore, loader: FakeLoader, tmp_path: Path) -> None:
    make_versions(tmp_path, 1)
    loader.failing[str(tmp_path / "1")] = -1
    with pytest.raises(ServingError) as info:
        core.reload_config(config(m={"base_path": tmp_path}))
    assert info.value.message.startswith("1 servable(s) did not become available: {{{name: m version: 1} due to")


def test_empty_model_list_unloads_everything_and_no_config_changes_nothing(core: ServerCore, tmp_path: Path) -> None:
    make_versions(tmp_path, 1)
    core.reload_config(config(m={"base_path": tmp_path}))
    core.reload_config(model_server_config_pb2.ModelServerConfig())  # "Taking no action for empty config."
    assert states(core, "m") == {1: AVAILABLE}
    core.reload_config(config())
    wait_for(lambda: states(core, "m") == {1: END}, CEILING, "m unloaded")


def test_a_missing_base_path_fails_the_whole_poll(core: ServerCore, tmp_path: Path) -> None:
    make_versions(tmp_path / "a", 1)
    core.reload_config(config(a={"base_path": tmp_path / "a"}))
    make_versions(tmp_path / "a", 2)
    blocked = reload_in_background(core, config(a={"base_path": tmp_path / "a"}, gone={"base_path": tmp_path / "x"}))
    # While `gone` has no base path, no poll emits anything: a's version 2 stays unknown.
    polls = 0
    original = core.source.poll_once

    def counting() -> None:
        nonlocal polls
        original()
        polls += 1

    core.source.poll_once = counting  # type: ignore[method-assign]
    wait_for(lambda: polls >= 3, CEILING, "three polls")
    assert states(core, "a") == {1: AVAILABLE}
    assert blocked.is_alive()
    make_versions(tmp_path / "x", 1)
    blocked.join(10)
    assert not blocked.is_alive()
    wait_for(lambda: states(core, "a") == {2: AVAILABLE, 1: END}, CEILING, "a moved to version 2")


def test_label_rules(loader: FakeLoader, tmp_path: Path) -> None:
    make_versions(tmp_path, 1, 2)
    both = {"base_path": tmp_path, "specific": [1, 2]}
    strict = ServerCore(loader, file_system_poll_wait_seconds=0.02)
    with pytest.raises(ServingError) as info:  # nothing is AVAILABLE at startup
        strict.reload_config(config(m={**both, "labels": {"stable": 1}}))
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION

    relaxed = ServerCore(loader, file_system_poll_wait_seconds=0.02, allow_version_labels_for_unavailable_models=True)
    relaxed.start()
    try:
        relaxed.reload_config(config(m={**both, "labels": {"stable": 1}}))
        wait_for(lambda: states(relaxed, "m") == {1: AVAILABLE, 2: AVAILABLE}, CEILING, "loads")
        assert relaxed.resolve(spec("m", label="stable")) == ("m:1", 1)
        make_versions(tmp_path, 3)
        three = {"base_path": tmp_path, "specific": [1, 2, 3]}
        with pytest.raises(ServingError):  # moving a label onto an unavailable version
            relaxed.reload_config(config(m={**three, "labels": {"stable": 3}}))
        relaxed.reload_config(config(m={**three, "labels": {"stable": 2, "next": 3}}))
        assert relaxed.resolve(spec("m", label="stable")) == ("m:2", 2)
        with pytest.raises(ServingError) as info:
            relaxed.resolve(spec("m", label="nope"))
        assert info.value.message == "Unrecognized servable version label: nope"
    finally:
        relaxed.stop()


def test_invalid_configs(core: ServerCore, tmp_path: Path) -> None:
    bad = config(m={"base_path": tmp_path})
    bad.model_config_list.config[0].model_platform = "pytorch"
    with pytest.raises(ServingError, match=r"^INVALID_ARGUMENT: Model m requests unsupported platform pytorch$"):
        core.reload_config(bad)
    bad.model_config_list.config[0].model_platform = ""
    with pytest.raises(ServingError, match=r"model_platform, model name is m$"):
        core.reload_config(bad)
    relative = config(m={"base_path": "models/m"})
    with pytest.raises(ServingError) as info:
        core.reload_config(relative)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == "Expected model m to have an absolute path or URI; got base_path()=models/m"
    assert states(core, "m") == {}
