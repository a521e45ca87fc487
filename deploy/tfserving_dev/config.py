"""Command-line flags and the text-protobuf config files of tensorflow_model_server."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from tensorflow_serving.config import model_server_config_pb2

from .errors import ServingError, invalid_argument

TENSORFLOW_PLATFORM = "tensorflow"
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


@dataclass(frozen=True)
class ServerFlags:
    """The parsed command line."""

    port: int
    rest_api_port: int
    host: str
    rest_api_host: str
    model_config_file: str
    model_name: str
    model_base_path: str
    monitoring_config_file: str
    file_system_poll_wait_seconds: float
    allow_version_labels_for_unavailable_models: bool


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfserving_dev/server.py",
        description="Development stand-in for tensorflow_model_server (gRPC + REST).",
        # Abbreviated flags would accept typos that the real server rejects.
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("--port", type=int, default=8500, help="gRPC port (default 8500)")
    add("--rest_api_port", type=int, default=8501, help="REST port; 0 disables REST")
    add("--host", default="127.0.0.1", help="bind address for gRPC and REST (default 127.0.0.1)")
    add("--rest_api_host", default=None, help="bind address for REST only (default: --host)")
    add("--model_config_file", default="", help="text ModelServerConfig file")
    add("--model_name", default="default", help="model name when using --model_base_path")
    add("--model_base_path", default="", help="base path of a single model")
    add("--monitoring_config_file", default="", help="text MonitoringConfig file")
    add(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="interval between base path polls; <= 0 polls only when a config is applied",
    )
    add(
        "--allow_version_labels_for_unavailable_models",
        type=_parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="allow labels to point at versions that are not AVAILABLE yet",
    )
    return parser


def parse_flags(argv: list[str]) -> ServerFlags:
    """Parse tensorflow_model_server-style flags; exits with a usage error on bad input."""
    parser = _build_parser()
    ns = parser.parse_args(argv)
    if ns.model_config_file and ns.model_base_path:
        parser.error("use either --model_config_file or --model_name/--model_base_path, not both")
    if not ns.model_config_file and not ns.model_base_path:
        parser.error("both --model_base_path and --model_config_file are empty")
    if not 0 <= ns.port <= 65535 or not 0 <= ns.rest_api_port <= 65535:
        parser.error("ports must be between 0 and 65535")
    return ServerFlags(
        port=ns.port,
        rest_api_port=ns.rest_api_port,
        host=ns.host,
        rest_api_host=ns.rest_api_host or ns.host,
        model_config_file=ns.model_config_file,
        model_name=ns.model_name,
        model_base_path=ns.model_base_path,
        monitoring_config_file=ns.monitoring_config_file,
        file_system_poll_wait_seconds=ns.file_system_poll_wait_seconds,
        allow_version_labels_for_unavailable_models=ns.allow_version_labels_for_unavailable_models,
    )


def _parse_text_proto(path: str, message: Any) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise invalid_argument(f"Cannot read '{path}': {exc.strerror}") from exc
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise invalid_argument(f"Invalid protobuf file: '{path}': {exc}") from exc


def initial_model_config(flags: ServerFlags) -> model_server_config_pb2.ModelServerConfig:
    """Return the ModelServerConfig named by the flags (config file or single model)."""
    config = model_server_config_pb2.ModelServerConfig()
    if flags.model_config_file:
        return _parse_text_proto(flags.model_config_file, config)
    model = config.model_config_list.config.add()
    model.name = flags.model_name
    model.base_path = flags.model_base_path
    model.model_platform = TENSORFLOW_PLATFORM
    return config


def validate_model_config(config: model_server_config_pb2.ModelServerConfig) -> None:
    """Reject configs TF Serving's ServerCore rejects, with its messages."""
    if config.WhichOneof("config") == "custom_model_config":
        raise invalid_argument(
            "ServerModelConfig type not supported by HandleReloadConfigRequest."
            " Only ModelConfigList is currently supported"
        )
    seen: set[str] = set()
    for model in config.model_config_list.config:
        if model.name in seen:
            raise invalid_argument(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
        if not model.model_platform:
            raise invalid_argument(
                "Illegal setting neither ModelServerConfig::model_type (deprecated) "
                "nor ModelServerConfig::model_platform."
            )
        if model.model_platform != TENSORFLOW_PLATFORM:
            raise invalid_argument(f"Model {model.name} requests unsupported platform {model.model_platform}")
        if not model.base_path:
            raise invalid_argument(f"Model {model.name} has an empty base_path")
        # TF Serving resolves relative base paths against its working directory too.
        model.base_path = os.path.abspath(model.base_path)


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
