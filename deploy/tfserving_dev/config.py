"""The text-protobuf config files of tensorflow_model_server and ServerCore's config checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from tensorflow_serving.config import model_server_config_pb2

from .errors import ServingError, invalid_argument
from .flags import ServerFlags

TENSORFLOW_PLATFORM = "tensorflow"
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def _parse_text_proto(path: str, message: Any) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise invalid_argument(f"Cannot read '{path}': {exc.strerror}") from exc
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise invalid_argument(f"Invalid protobuf file: '{path}': {exc}") from exc


def read_model_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    """Parse a text ModelServerConfig file."""
    return _parse_text_proto(path, model_server_config_pb2.ModelServerConfig())


def initial_model_config(flags: ServerFlags) -> model_server_config_pb2.ModelServerConfig:
    """Return the ModelServerConfig named by the flags (config file or single model)."""
    if flags.model_config_file:
        return read_model_config(flags.model_config_file)
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = flags.model_name
    model.base_path = flags.model_base_path
    model.model_platform = TENSORFLOW_PLATFORM
    return config


def _is_relative_path(uri: str) -> bool:
    """server_core.cc UriIsRelativePath: no scheme, no host and not an absolute path."""
    return "://" not in uri and not uri.startswith("/")


def validate_model_config(config: model_server_config_pb2.ModelServerConfig) -> None:
    """Reject configs TF Serving's ServerCore::ReloadConfig rejects, with its messages.

    Checks run in the order of server_core.cc: ValidateModelConfigList (unique names, then
    absolute base paths), then GetPlatform/CreateStoragePathRoutes for each model.
    """
    if config.WhichOneof("config") == "custom_model_config":
        raise invalid_argument(
            "ServerModelConfig type not supported by HandleReloadConfigRequest."
            " Only ModelConfigList is currently supported"
        )
    models = config.model_config_list.config
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            raise invalid_argument(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
    for model in models:
        if _is_relative_path(model.base_path):
            # TF Serving resolves nothing against its working directory: it refuses.
            raise invalid_argument(
                f"Expected model {model.name} to have an absolute path or URI; got base_path()={model.base_path}"
            )
    for model in models:
        if not model.model_platform:
            raise invalid_argument(
                "Illegal setting neither ModelServerConfig::model_type (deprecated) "
                f"nor ModelServerConfig::model_platform, model name is {model.name}"
            )
        if model.model_platform != TENSORFLOW_PLATFORM:
            raise invalid_argument(f"Model {model.name} requests unsupported platform {model.model_platform}")


def _monitoring_config_class() -> Any:
    """Return the MonitoringConfig message class.

    tensorflow-serving-api does not ship monitoring_config_pb2, so when it is missing the
    two tiny messages of tensorflow_serving/config/monitoring_config.proto are declared
    here (same package, names and field numbers) instead of generating code.
    """
    try:
        from tensorflow_serving.config import monitoring_config_pb2

        return monitoring_config_pb2.MonitoringConfig
    except ImportError:
        pass
    full_name = "tensorflow.serving.MonitoringConfig"
    pool = descriptor_pool.Default()
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))
    except KeyError:
        pass
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    prometheus = file_proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=8, label=1)  # bool
    prometheus.field.add(name="path", number=2, type=9, label=1)  # string
    monitoring = file_proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=11,  # message
        label=1,
        type_name=".tensorflow.serving.PrometheusConfig",
    )
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))


def prometheus_path(flags: ServerFlags) -> str | None:
    """Return the metrics path if the monitoring config enables Prometheus, else None."""
    if not flags.monitoring_config_file:
        return None
    config = _parse_text_proto(flags.monitoring_config_file, _monitoring_config_class()())
    if not config.prometheus_config.enable:
        return None
    return config.prometheus_config.path or DEFAULT_PROMETHEUS_PATH


def startup_error_message(exc: ServingError) -> str:
    """Format a startup failure like tensorflow_model_server does."""
    hint = ""
    if exc.code == grpc.StatusCode.FAILED_PRECONDITION and "label" in exc.message:
        hint = " (start with --allow_version_labels_for_unavailable_models to allow this)"
    return f"Failed to start server. Error: {exc}{hint}"
