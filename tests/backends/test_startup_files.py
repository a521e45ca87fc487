"""The backends' start-up files: what TF Serving and TorchServe load when they start again."""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import text_format

from gateway.backends.tfserving.client import TFServingBackend
from gateway.backends.tfserving.protos import serving_pb2 as pb
from gateway.backends.torchserve import TorchServeBackend


def read_tf_config(path: Path) -> pb.ModelServerConfig:
    config = pb.ReloadConfigRequest().config
    text_format.Parse(path.read_text(), config)
    return config


def test_tf_serving_config_file_lists_exactly_the_kept_versions(tmp_path):
    path = tmp_path / ".tfserving" / "models.config"
    backend = TFServingBackend("127.0.0.1:1", base_path="/models", config_file=path)
    assert backend.write_startup({"mlp": {4, 2}, "cnn": {1}, "empty": set()}, {"mlp": 2}) is True
    config = read_tf_config(path)
    entries = {c.name: c for c in config.model_config_list.config}
    assert sorted(entries) == ["cnn", "mlp"]
    assert entries["mlp"].base_path == "/models/mlp" and entries["mlp"].model_platform == "tensorflow"
    assert list(entries["mlp"].model_version_policy.specific.versions) == [2, 4]
    assert backend.write_startup({"mlp": {2, 4}, "cnn": {1}}, {}) is False  # same content: untouched


def test_tf_serving_config_file_with_nothing_to_serve_is_an_empty_list_not_no_config(tmp_path):
    """TF Serving refuses a config file with no model_config_list; an empty list serves nothing."""
    path = tmp_path / "models.config"
    backend = TFServingBackend("127.0.0.1:1", base_path="/models", config_file=path)
    backend.write_startup({}, {})
    config = read_tf_config(path)
    assert config.HasField("model_config_list") and len(config.model_config_list.config) == 0


def test_torchserve_startup_file_registers_the_stable_version_as_default(tmp_path):
    path = tmp_path / ".torchserve" / "models.json"
    backend = TorchServeBackend("http://127.0.0.1:1", "http://127.0.0.1:2", startup_file=path)
    backend.write_startup({"mlp": {1, 3}, "cnn": {5}, "other": {7, 8}}, {"mlp": 3, "other": 2})
    assert json.loads(path.read_text()) == {
        "models": {
            "cnn": {"default": "5", "versions": ["5"]},
            "mlp": {"default": "3", "versions": ["1", "3"]},
            # a stable version on the other stack: TorchServe's default is its highest kept one
            "other": {"default": "8", "versions": ["7", "8"]},
        }
    }
    assert not list(path.parent.glob(".models.json.*"))  # no temporary file left behind


def test_no_startup_file_configured_writes_nothing(tmp_path):
    backend = TorchServeBackend("http://127.0.0.1:1", "http://127.0.0.1:2")
    assert backend.write_startup({"mlp": {1}}, {}) is False
    assert list(tmp_path.iterdir()) == []
