"""The example model store: layout, cross-stack equivalence, and the TorchServe handler contract.

The whole store is built once per session (``conftest.py``). The handler is driven in-process over
an extracted ``.mar``, as TorchServe would drive it (``archives.py``).
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("model_archiver")

from examples import build_models  # noqa: E402
from examples.build_models import CNN, MLP, VERSIONS, Version  # noqa: E402

from tests.examples.archives import Serve, extract, load_served_mar, read_json  # noqa: E402

MLP_SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
}
CNN_SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
}


def version_dir(store: Path, model: str, number: int) -> Path:
    return store / model / str(number)


@pytest.fixture(scope="session")
def mlp_serve(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Serve:
    _, serve = load_served_mar(version_dir(store, "mlp", 1) / "mlp.mar", tmp_path_factory.mktemp("mar"))
    return serve


Predict = Callable[[np.ndarray], np.ndarray]
Predictor = Callable[[str, int], Predict]


@pytest.fixture(scope="session")
def predictor(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    """``predictor(model, number)`` runs that version's artifact directly (loaded once)."""
    workdir = tmp_path_factory.mktemp("extracted")
    cache: dict[tuple[str, int], Predict] = {}

    def get(model: str, number: int) -> Predict:
        if (model, number) not in cache:
            path = version_dir(store, model, number)
            if (path / "saved_model.pb").exists():
                cache[model, number] = _tf_predictor(path)
            else:
                cache[model, number] = _torch_predictor(path / f"{model}.mar", workdir)
        return cache[model, number]

    return get


def _torch_predictor(mar: Path, workdir: Path) -> Predict:
    """Run the network packaged in a .mar (its model file and state_dict), without the handler."""
    target = extract(mar, workdir)
    manifest = read_json(target / "MAR-INF" / "MANIFEST.json")["model"]
    spec = importlib.util.spec_from_file_location(f"net_{target.name}", target / manifest["modelFile"])
    assert spec is not None and spec.loader is not None
    code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code)
    (network_class,) = [c for c in vars(code).values() if isinstance(c, type) and c.__module__ == code.__name__]
    network = network_class().eval()
    network.load_state_dict(torch.load(target / manifest["serializedFile"], weights_only=True))

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(x)).numpy()

    return predict


def _tf_predictor(path: Path) -> Predict:
    """Run a SavedModel's ``serving_default`` signature."""
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    (output_name,) = fn.structured_outputs

    def predict(x: np.ndarray) -> np.ndarray:
        return fn(x=tf.constant(x))[output_name].numpy()

    return predict


def random_inputs(shape: tuple[int, ...], n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


# --- layout ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"{v.model.name}-{v.number}")
def test_version_directory_layout(store: Path, version: Version) -> None:
    path = version_dir(store, version.model.name, version.number)
    assert build_models.is_complete(path)
    expected_signature = MLP_SIGNATURE if version.model is MLP else CNN_SIGNATURE
    assert read_json(path / "signature.json") == expected_signature

    sample_in = read_json(path / "sample_input.json")
    assert np.asarray(sample_in["instances"]).shape == (2, *version.model.input_shape)
    sample_out = read_json(path / "sample_output.json")
    assert np.asarray(sample_out["predictions"]).shape == (2, *version.model.output_shape)

    if version.backend == "torchserve":
        assert not (path / "saved_model.pb").exists()
        with zipfile.ZipFile(path / f"{version.model.name}.mar") as archive:
            manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
            names = set(archive.namelist())
        assert manifest["model"]["modelName"] == version.model.name
        assert manifest["model"]["modelVersion"] == str(version.number)
        assert names == {
            "MAR-INF/MANIFEST.json",
            "signature.json",
            "torchserve_handler.py",
            "rest_codec.py",
            version.model.code,
            f"{version.model.name}.pt",
        }
    else:
        assert (path / "saved_model.pb").is_file()
        assert (path / "variables" / "variables.index").is_file()
        assert not list(path.glob("*.mar"))


def test_store_holds_only_versions(store: Path) -> None:
    """No temporary directories are left behind; only integer version directories."""
    assert sorted(p.name for p in store.iterdir()) == ["cnn", "mlp"]
    assert sorted(p.name for p in (store / "mlp").iterdir()) == ["1", "2", "3"]
    assert sorted(p.name for p in (store / "cnn").iterdir()) == ["1", "2"]


def test_sample_input_is_shared_by_all_versions_of_a_model(store: Path) -> None:
    for model, numbers in (("mlp", (1, 2, 3)), ("cnn", (1, 2))):
        inputs = [read_json(version_dir(store, model, n) / "sample_input.json") for n in numbers]
        assert all(i == inputs[0] for i in inputs)


def test_tf_savedmodel_signature(store: Path) -> None:
    for model, output in (("mlp", "probabilities"), ("cnn", "logits")):
        fn = tf.saved_model.load(str(version_dir(store, model, 2))).signatures["serving_default"]
        _, kwargs = fn.structured_input_signature
        assert list(kwargs) == ["x"]
        assert kwargs["x"].dtype == tf.float32
        assert list(fn.structured_outputs) == [output]


# --- the same network on both stacks ---------------------------------------------------------


def test_mlp_tf_equals_torch(predictor: Predictor) -> None:
    x = random_inputs(MLP.input_shape, 256)
    torch_out = predictor("mlp", 1)(x)
    tf_out = predictor("mlp", 2)(x)
    np.testing.assert_allclose(tf_out, torch_out, rtol=0, atol=1e-5)


def test_cnn_tf_equals_torch(predictor: Predictor) -> None:
    x = random_inputs(CNN.input_shape, 16)
    torch_out = predictor("cnn", 1)(x)
    tf_out = predictor("cnn", 2)(x)
    np.testing.assert_allclose(tf_out, torch_out, rtol=0, atol=1e-4)
    # Logits are small; make sure the comparison is not vacuous.
    assert np.abs(torch_out).max() > 1e-2


def test_mlp_v3_differs_from_v1(predictor: Predictor) -> None:
    x = random_inputs(MLP.input_shape, 256)
    v1, v3 = predictor("mlp", 1)(x), predictor("mlp", 3)(x)
    assert np.abs(v1 - v3).max() > 0.05
    assert (v1.argmax(axis=1) != v3.argmax(axis=1)).any()


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"{v.model.name}-{v.number}")
def test_sample_output_is_the_model_on_sample_input(
    store: Path, predictor: Predictor, tmp_path: Path, version: Version
) -> None:
    path = version_dir(store, version.model.name, version.number)
    expected = np.asarray(read_json(path / "sample_output.json")["predictions"])
    if version.backend == "torchserve":
        # Through the handler, as TorchServe would answer the smoke test.
        _, serve = load_served_mar(path / f"{version.model.name}.mar", tmp_path)
        [(status, body)] = serve({"body": (path / "sample_input.json").read_bytes()})
        assert status == 200
        got = np.asarray(body["predictions"])
    else:
        x = np.asarray(read_json(path / "sample_input.json")["instances"], dtype=np.float32)
        got = predictor(version.model.name, version.number)(x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


# --- the handler contract --------------------------------------------------------------------

ROWS = [[0.1, -0.2, 0.3, 0.4], [1.0, 2.0, -3.0, 0.5]]


def test_handler_module_defines_exactly_one_class(store: Path, tmp_path: Path) -> None:
    """TorchServe's loader instantiates the one class of a handler module; more fail to load."""
    from ts.utils.util import list_classes_from_module

    module, _ = load_served_mar(version_dir(store, "mlp", 1) / "mlp.mar", tmp_path)
    assert [c.__name__ for c in list_classes_from_module(module)] == ["SignatureHandler"]


def test_handler_row_form(predictor: Predictor, mlp_serve: Serve) -> None:
    expected = predictor("mlp", 1)(np.asarray(ROWS, dtype=np.float32))
    for rows in (ROWS, [{"x": row} for row in ROWS]):
        # TorchServe hands over bytes, or an already decoded object for application/json.
        for body in (json.dumps({"instances": rows}).encode(), {"instances": rows}):
            [(status, response)] = mlp_serve({"body": body})
            assert status == 200
            assert list(response) == ["predictions"]
            np.testing.assert_allclose(response["predictions"], expected, rtol=0, atol=1e-6)


def test_handler_column_form(predictor: Predictor, mlp_serve: Serve) -> None:
    expected = predictor("mlp", 1)(np.asarray(ROWS, dtype=np.float32))
    for inputs in (ROWS, {"x": ROWS}):
        body = {"inputs": inputs, "signature_name": "serving_default"}
        [(status, response)] = mlp_serve({"data": json.dumps(body)})
        assert status == 200
        assert list(response) == ["outputs"]
        np.testing.assert_allclose(response["outputs"], expected, rtol=0, atol=1e-6)


def test_handler_cnn_row_form(store: Path, predictor: Predictor, tmp_path: Path) -> None:
    _, serve = load_served_mar(version_dir(store, "cnn", 1) / "cnn.mar", tmp_path)
    x = random_inputs(CNN.input_shape, 3)
    [(status, response)] = serve({"body": {"instances": x.tolist()}})
    assert status == 200
    expected = predictor("cnn", 1)(x)
    np.testing.assert_allclose(response["predictions"], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [[1, 2, 3, 4, 5]] * 2}, "input 'x': expected shape [-1, 4], got [2, 5]"),
        ({"inputs": [1, 2, 3, 4]}, "input 'x': expected shape [-1, 4], got [4]"),
        ({"inputs": {"y": ROWS}}, "missing input 'x'"),
        ({"instances": [{"y": ROWS[0]}]}, "instances[0]: missing input 'x'"),
        ({"inputs": {"x": ROWS, "y": ROWS}}, "unknown input 'y'"),
        ({"instances": [[1, 2, 3, 4], [1, 2]]}, "input 'x': expected shape [-1, 4], got a ragged"),
        ({"instances": [[1, 2, 3, "a"]]}, "input 'x': expected FP32 numbers, got strings"),
        ({"instances": []}, "'instances' must be a non-empty list"),
        ({"inputs": ROWS, "instances": ROWS}, "either 'instances' or 'inputs', got both"),
        ({"instance": ROWS}, "body must be a JSON object with 'instances' or 'inputs'"),
        ([ROWS], "body must be a JSON object with 'instances' or 'inputs', got a list"),
        ({"inputs": ROWS, "signature_name": "other"}, "signature_name: expected 'serving_default'"),
        (b'{"instances": [[1, 2, 3, 4]]', "malformed JSON body"),
        (b"", "got an empty body"),
    ],
)
def test_handler_rejects_bad_requests(mlp_serve: Serve, body: Any, message: str) -> None:
    [(status, response)] = mlp_serve({"body": body})
    assert status == 400
    assert list(response) == ["error"]
    assert message in response["error"]


def test_handler_explains_a_missing_body(mlp_serve: Serve) -> None:
    # What TorchServe hands over for a form-encoded body, e.g. `curl -d` without a Content-Type.
    [(status, response)] = mlp_serve({})
    assert status == 400
    assert "Content-Type: application/json" in response["error"]


def test_handler_batch_isolates_bad_requests(predictor: Predictor, mlp_serve: Serve) -> None:
    """One bad request in a TorchServe batch fails only itself."""
    expected = predictor("mlp", 1)(np.asarray(ROWS, dtype=np.float32))
    results = mlp_serve(
        {"body": {"instances": ROWS}},
        {"body": {"instances": [[1, 2, 3]]}},
        {"data": json.dumps({"inputs": ROWS[1:]}).encode()},
        {"body": b"not json"},
    )
    assert [status for status, _ in results] == [200, 400, 200, 400]
    np.testing.assert_allclose(results[0][1]["predictions"], expected, rtol=0, atol=1e-6)
    assert results[1][1] == {"error": "input 'x': expected shape [-1, 4], got [1, 3]"}
    np.testing.assert_allclose(results[2][1]["outputs"], expected[1:], rtol=0, atol=1e-6)


# --- the builder -----------------------------------------------------------------------------


def test_builder_skips_complete_versions_and_rebuilds_with_force(tmp_path: Path) -> None:
    version = VERSIONS[0]
    target = tmp_path / "mlp" / "1"
    assert build_models.build_version(tmp_path, version) is True
    mar_mtime = (target / "mlp.mar").stat().st_mtime_ns
    assert build_models.build_version(tmp_path, version) is False
    assert (target / "mlp.mar").stat().st_mtime_ns == mar_mtime
    assert build_models.build_version(tmp_path, version, force=True) is True
    assert build_models.is_complete(target)
    assert sorted(p.name for p in (tmp_path / "mlp").iterdir()) == ["1"]


def test_builder_replaces_archives_of_an_older_format(tmp_path: Path) -> None:
    """A torch.export archive from an older builder (no model file) is rebuilt, not skipped."""
    version = VERSIONS[0]
    target = tmp_path / "mlp" / "1"
    build_models.build_version(tmp_path, version)
    old = {
        "model": {
            "modelName": "mlp",
            "serializedFile": "mlp.pt2",
            "handler": "torchserve_handler.py",
            "modelVersion": "1",
        }
    }
    with zipfile.ZipFile(target / "mlp.mar", "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps(old))
        archive.writestr("mlp.pt2", b"a torch.export program")
        archive.writestr("torchserve_handler.py", "")
    assert not build_models.is_complete(target)
    assert build_models.build_version(tmp_path, version) is True
    assert build_models.is_eager_archive(target / "mlp.mar")


def test_builder_leaves_nothing_behind_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(build_models, "write_torchserve", fail)
    with pytest.raises(RuntimeError, match="boom"):
        build_models.build_version(tmp_path, VERSIONS[0])
    assert list((tmp_path / "mlp").iterdir()) == []
