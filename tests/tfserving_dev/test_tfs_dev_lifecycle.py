"""Config reloads, version labels, base-path polling and failed loads."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from .helpers import AVAILABLE, END, ServerProcess, model_config, wait_for

pytestmark = pytest.mark.e2e

X = np.array([[1.0, 1.0]], dtype=np.float32)


def predict(server: ServerProcess, model: str, **spec: object) -> tuple[int, list[float]]:
    """Predict on a linear-style model; returns (version, y values)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if "version" in spec:
        request.model_spec.version.value = int(spec["version"])  # type: ignore[call-overload]
    if "label" in spec:
        request.model_spec.version_label = str(spec["label"])
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(X))
    response = server.predict.Predict(request, timeout=10)
    return response.model_spec.version.value, tf.make_ndarray(response.outputs["y"]).ravel().tolist()


def reload_error(server: ServerProcess, config: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        server.reload(config)  # type: ignore[arg-type]
    return info.value


@pytest.mark.usefixtures("restore_config")
def test_reload_adds_then_removes_a_version(server: ServerProcess, model_paths: dict[str, Path]) -> None:
    response = server.reload(model_config(model_paths, {"reloadable": {"specific": [1, 2]}}))
    assert response.status.error_code == 0
    wait_for(lambda: server.states("reloadable") == {1: AVAILABLE, 2: AVAILABLE}, 30, "v2")
    assert predict(server, "reloadable") == (2, [31.0])

    server.reload(model_config(model_paths, {"reloadable": {"specific": [2]}}))
    wait_for(lambda: server.states("reloadable") == {1: END, 2: AVAILABLE}, 30, "v1 unloaded")
    with pytest.raises(grpc.RpcError) as info:
        predict(server, "reloadable", version=1)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.usefixtures("restore_config")
def test_reload_refuses_moving_a_label_to_an_unavailable_version(
    server: ServerProcess, model_paths: dict[str, Path]
) -> None:
    # Even with --allow_version_labels_for_unavailable_models, TF Serving refuses to move
    # an existing label onto a version that is not AVAILABLE; the whole reload is refused.
    config = model_config(
        model_paths,
        {
            "linear": {"specific": [1, 2, 3], "labels": {"stable": 3, "canary": 2}},
            "reloadable": {"specific": [1, 2]},
        },
    )
    before = server.states("reloadable")
    error = reload_error(server, config)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == (
        "Request to assign label to version 3 of model linear, which is not currently available for inference"
    )
    # The previous config keeps serving: same label target, no new version loaded.
    assert predict(server, "linear", label="stable") == (1, [3.5])
    assert predict(server, "linear", label="canary") == (2, [31.0])
    assert server.states("reloadable") == before
    assert before[1] == AVAILABLE and before.get(2) != AVAILABLE


@pytest.mark.usefixtures("restore_config")
def test_reload_moves_a_label_to_an_available_version(server: ServerProcess, model_paths: dict[str, Path]) -> None:
    config = model_config(model_paths, {"linear": {"specific": [1, 2], "labels": {"stable": 2, "canary": 2}}})
    server.reload(config)
    assert predict(server, "linear", label="stable") == (2, [31.0])


@pytest.mark.usefixtures("restore_config")
def test_reload_waits_for_a_new_model_and_drops_a_removed_one(
    server: ServerProcess, model_paths: dict[str, Path]
) -> None:
    config = model_config(model_paths, {"late": {"base_path": model_paths["reloadable"]}})
    server.reload(config)
    # HandleReloadConfigRequest returns once new models are loaded, as in TF Serving.
    assert server.states("late") == {2: AVAILABLE}

    server.reload(model_config(model_paths, {"pair": None}))
    # Unloads happen on the manager's next ticks, after the reload returned.
    wait_for(lambda: server.states("late") == {2: END}, 30, "late unloaded")
    wait_for(lambda: server.states("pair") == {1: END}, 30, "pair unloaded")


def test_reload_rejects_invalid_configs(server: ServerProcess, model_paths: dict[str, Path]) -> None:
    config = model_config(model_paths)
    config.model_config_list.config.append(config.model_config_list.config[0])
    error = reload_error(server, config)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Illegal to list model linear multiple times" in error.details()

    error = reload_error(server, type(config)())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert server.states("linear") == {1: AVAILABLE, 2: AVAILABLE}


def test_polling_loads_a_new_version_directory(server: ServerProcess, model_paths: dict[str, Path]) -> None:
    base = model_paths["polled"]
    staging = base.parent / "polled-staging"
    shutil.copytree(model_paths["linear"] / "2", staging)
    os.rename(staging, base / "5")  # appears atomically, like a finished export
    # Policy latest{1}: 5 replaces 1; the integer dir 9 holds a .mar and is ignored.
    wait_for(lambda: server.states("polled") == {5: AVAILABLE, 1: END}, 30, "version 5")
    assert predict(server, "polled") == (5, [31.0])

    shutil.rmtree(base / "5")
    wait_for(lambda: server.states("polled") == {5: END, 1: AVAILABLE}, 30, "back to 1")
    assert predict(server, "polled") == (1, [3.5])
