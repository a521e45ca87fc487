"""The adapters describe their own artifacts; every table keyed by backend kind derives from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.backends.catalog import ARTIFACTS, PLATFORMS, backend_of
from gateway.backends.tfserving.codec import DATATYPE_TO_TF_NAME, tf_dtype_name
from gateway.core.kinds import KINDS, as_kind
from gateway.core.tensors import DATATYPES
from gateway.registry.records import BACKENDS
from tests.fakes import write_mar


def test_every_kind_has_an_adapter_and_the_registry_accepts_exactly_those():
    assert tuple(ARTIFACTS) == KINDS == ("torchserve", "tfserving")
    assert frozenset(KINDS) == BACKENDS
    assert PLATFORMS == {"torchserve": "pytorch_torchserve", "tfserving": "tensorflow_savedmodel"}
    assert as_kind("tfserving") == "tfserving"
    assert as_kind("onnx") is None


def test_version_directories_are_recognised_by_their_adapter(tmp_path: Path):
    mar_dir, saved_dir, empty = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_mar(mar_dir, "toy", "2")
    saved_dir.mkdir()
    (saved_dir / "saved_model.pb").write_bytes(b"")
    empty.mkdir()
    assert (backend_of(mar_dir), backend_of(saved_dir), backend_of(empty)) == ("torchserve", "tfserving", None)
    assert ARTIFACTS["torchserve"].stated_version(mar_dir) == "2"
    assert ARTIFACTS["tfserving"].stated_version(saved_dir) is None


def test_an_unreadable_archive_is_named(tmp_path: Path):
    (tmp_path / "toy.mar").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"toy\.mar is not a valid model archive"):
        ARTIFACTS["torchserve"].stated_version(tmp_path)


def test_tf_dtype_names_cover_every_datatype_the_gateway_knows():
    assert set(DATATYPE_TO_TF_NAME) == set(DATATYPES)
    assert tf_dtype_name("FP32") == "DT_FLOAT"
    assert tf_dtype_name("BYTES") == "DT_STRING"
    assert tf_dtype_name("FP8") == "DT_INVALID"
