"""ModelManager rules with a fake loader: fast, no TensorFlow model is loaded."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.config import model_server_config_pb2
from tfserving_dev.errors import ServingError
from tfserving_dev.manager import ModelManager
from tfserving_dev.states import AVAILABLE, END, LOADING

from .helpers import wait_for


class FakeLoader:
    """Loads instantly unless told to fail a path or to hold a version until released."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.gates: dict[int, threading.Event] = {}
        self.calls: list[tuple[str, int]] = []

    def __call__(self, name: str, version: int, path: str) -> str:
        self.calls.append((name, version))
        gate = self.gates.get(version)
        if gate is not None:
            gate.wait(10)
        if path in self.failing:
            raise ServingError(grpc.StatusCode.DATA_LOSS, f"cannot parse {path}")
        return f"{name}:{version}"


def make_versions(base: Path, *versions: int, saved_model: bool = True) -> None:
    for version in versions:
        (base / str(version)).mkdir(parents=True, exist_ok=True)
        if saved_model:
            (base / str(version) / "saved_model.pb").write_bytes(b"")


def config(**models: dict[str, object]) -> model_server_config_pb2.ModelServerConfig:
    result = model_server_config_pb2.ModelServerConfig()
    for name, options in models.items():
        model = result.model_config_list.config.add(
            name=name, base_path=str(options["base_path"]), model_platform="tensorflow"
        )
        if "specific" in options:
            model.model_version_policy.specific.versions.extend(options["specific"])  # type: ignore[arg-type]
        for label, version in dict(options.get("labels", {})).items():  # type: ignore[call-overload]
            model.version_labels[label] = version
    return result


def states(manager: ModelManager, name: str) -> dict[int, int]:
    try:
        return {s.version: s.state for s in manager.status(name)}
    except ServingError:
        return {}


def spec(name: str, **kwargs: object) -> model_pb2.ModelSpec:
    result = model_pb2.ModelSpec(name=name)
    if "version" in kwargs:
        result.version.value = int(kwargs["version"])  # type: ignore[call-overload]
    if "label" in kwargs:
        result.version_label = str(kwargs["label"])
    return result


@pytest.fixture
def loader() -> FakeLoader:
    return FakeLoader()


@pytest.fixture
def manager(loader: FakeLoader) -> Iterator[ModelManager]:
    result = ModelManager(loader, poll_wait_seconds=0.05, allow_labels_for_unavailable=False)
    result.start()
    yield result
    for gate in loader.gates.values():
        gate.set()
    result.stop()


def test_latest_policy_keeps_serving_until_the_new_version_is_ready(
    manager: ModelManager, loader: FakeLoader, tmp_path: Path
) -> None:
    make_versions(tmp_path, 1)
    make_versions(tmp_path, 7, saved_model=False)  # e.g. a TorchServe .mar directory
    manager.apply_config(config(m={"base_path": tmp_path}))
    assert states(manager, "m") == {1: AVAILABLE}

    loader.gates[2] = threading.Event()
    make_versions(tmp_path, 2)
    wait_for(lambda: states(manager, "m") == {2: LOADING, 1: AVAILABLE}, 5, "v2 loading")
    assert manager.resolve(spec("m")) == ("m:1", 1)  # still served while 2 loads
    loader.gates[2].set()
    wait_for(lambda: states(manager, "m") == {2: AVAILABLE, 1: END}, 5, "v1 unloaded")
    assert manager.resolve(spec("m")) == ("m:2", 2)


def test_failed_load_is_end_with_error_and_retried_only_when_reaspired(
    manager: ModelManager, loader: FakeLoader, tmp_path: Path
) -> None:
    make_versions(tmp_path, 1)
    loader.failing.add(str(tmp_path / "1"))
    manager.apply_config(config(m={"base_path": tmp_path, "specific": [1]}), wait=False)
    wait_for(lambda: states(manager, "m") == {1: END}, 5, "failed load")
    (status,) = manager.status("m")
    assert status.error_code == grpc.StatusCode.DATA_LOSS
    assert status.error_message == f"cannot parse {tmp_path / '1'}"
    time.sleep(0.2)  # several polls: no retry while it stays aspired
    assert loader.calls == [("m", 1)]

    loader.failing.clear()
    shutil.rmtree(tmp_path / "1")
    time.sleep(0.3)  # the poller sees the directory gone
    make_versions(tmp_path, 1)
    wait_for(lambda: states(manager, "m") == {1: AVAILABLE}, 5, "retry after re-aspired")
    assert manager.status("m")[0].error_code == grpc.StatusCode.OK


def test_reload_waits_for_new_models_and_reports_their_failures(
    manager: ModelManager, loader: FakeLoader, tmp_path: Path
) -> None:
    make_versions(tmp_path / "a", 1)
    make_versions(tmp_path / "b", 1)
    loader.failing.add(str(tmp_path / "b" / "1"))
    manager.apply_config(config(a={"base_path": tmp_path / "a"}))
    assert states(manager, "a") == {1: AVAILABLE}
    with pytest.raises(ServingError) as info:
        manager.apply_config(config(a={"base_path": tmp_path / "a"}, b={"base_path": tmp_path / "b"}))
    assert info.value.code == grpc.StatusCode.UNKNOWN
    assert info.value.message.startswith("1 model(s) did not become available: {{name: b version: 1}")

    manager.apply_config(config(b={"base_path": tmp_path / "b"}))  # drops a
    assert states(manager, "a") == {1: END}
    with pytest.raises(ServingError) as info:
        manager.resolve(spec("a"))
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_label_rules(loader: FakeLoader, tmp_path: Path) -> None:
    make_versions(tmp_path, 1, 2)
    both = {"base_path": tmp_path, "specific": [1, 2]}
    strict = ModelManager(loader, poll_wait_seconds=0)
    with pytest.raises(ServingError) as info:  # nothing is AVAILABLE at startup
        strict.apply_config(config(m={**both, "labels": {"stable": 1}}), wait=False)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION

    relaxed = ModelManager(loader, poll_wait_seconds=0, allow_labels_for_unavailable=True)
    relaxed.start()
    try:
        relaxed.apply_config(config(m={**both, "labels": {"stable": 1}}))
        wait_for(lambda: states(relaxed, "m") == {1: AVAILABLE, 2: AVAILABLE}, 5, "loads")
        assert relaxed.resolve(spec("m", label="stable")) == ("m:1", 1)
        make_versions(tmp_path, 3)
        three = {"base_path": tmp_path, "specific": [1, 2, 3]}
        with pytest.raises(ServingError):  # moving a label onto an unavailable version
            relaxed.apply_config(config(m={**three, "labels": {"stable": 3}}))
        relaxed.apply_config(config(m={**three, "labels": {"stable": 2, "next": 3}}))
        assert relaxed.resolve(spec("m", label="stable")) == ("m:2", 2)
        with pytest.raises(ServingError) as info:
            relaxed.resolve(spec("m", label="nope"))
        assert info.value.message == "Unrecognized servable version label: nope"
    finally:
        relaxed.stop()


def test_invalid_configs(manager: ModelManager, tmp_path: Path) -> None:
    bad = config(m={"base_path": tmp_path})
    bad.model_config_list.config[0].model_platform = "pytorch"
    with pytest.raises(ServingError, match="unsupported platform pytorch"):
        manager.apply_config(bad)
