"""tensorflow_model_server's command-line flags: the real names and defaults.

Names and defaults follow model_servers/main.cc (the flag list) and model_servers/server.h
(Server::Options, where the defaults live). Flags that only tune hardware this server does
not use (GPU memory, batching, REST timeouts) are accepted and ignored, so that the same
command line runs against this server and the official image.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

# server.h: max_num_load_retries = 5; load_retry_interval_micros = 1 minute.
DEFAULT_MAX_NUM_LOAD_RETRIES = 5
DEFAULT_LOAD_RETRY_INTERVAL_MICROS = 60 * 1000 * 1000


@dataclass(frozen=True)
class ServerFlags:
    """The parsed command line."""

    port: int
    rest_api_port: int
    host: str
    rest_api_host: str
    model_config_file: str
    model_config_file_poll_wait_seconds: int
    model_name: str
    model_base_path: str
    monitoring_config_file: str
    file_system_poll_wait_seconds: float
    max_num_load_retries: int
    load_retry_interval_micros: int
    allow_version_labels_for_unavailable_models: bool
    per_process_gpu_memory_fraction: float
    enable_batching: bool
    rest_api_timeout_in_ms: int


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_bool(parser: argparse.ArgumentParser, name: str, help_text: str) -> None:
    # `--flag`, `--flag=true` and `--flag=false`, as tensorflow::Flag parses a bool.
    parser.add_argument(name, type=_parse_bool, nargs="?", const=True, default=False, help=help_text)


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
    add(
        "--model_config_file_poll_wait_seconds",
        type=int,
        default=0,
        help="seconds between re-reads of --model_config_file; 0 reads it only at start-up",
    )
    add("--model_name", default="default", help="model name when using --model_base_path")
    add("--model_base_path", default="", help="base path of a single model")
    add("--monitoring_config_file", default="", help="text MonitoringConfig file")
    add(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="seconds between base path polls; 0 polls once at start-up, < 0 never",
    )
    add(
        "--max_num_load_retries",
        type=int,
        default=DEFAULT_MAX_NUM_LOAD_RETRIES,
        help="retries of a failed load before giving up (0: one attempt only)",
    )
    add(
        "--load_retry_interval_micros",
        type=int,
        default=DEFAULT_LOAD_RETRY_INTERVAL_MICROS,
        help="microseconds between load retries (negative: no wait)",
    )
    _add_bool(parser, "--allow_version_labels_for_unavailable_models", "let new labels name unavailable versions")
    add(
        "--per_process_gpu_memory_fraction",
        type=float,
        default=0.0,
        help="accepted and ignored: this server runs TensorFlow on the CPU",
    )
    _add_bool(parser, "--enable_batching", "accepted and ignored: requests run one by one")
    add("--rest_api_timeout_in_ms", type=int, default=30000, help="accepted and ignored")
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
    if ns.max_num_load_retries < 0:
        parser.error("--max_num_load_retries must not be negative")
    return ServerFlags(
        port=ns.port,
        rest_api_port=ns.rest_api_port,
        host=ns.host,
        rest_api_host=ns.rest_api_host or ns.host,
        model_config_file=ns.model_config_file,
        model_config_file_poll_wait_seconds=ns.model_config_file_poll_wait_seconds,
        model_name=ns.model_name,
        model_base_path=ns.model_base_path,
        monitoring_config_file=ns.monitoring_config_file,
        file_system_poll_wait_seconds=ns.file_system_poll_wait_seconds,
        max_num_load_retries=ns.max_num_load_retries,
        load_retry_interval_micros=ns.load_retry_interval_micros,
        allow_version_labels_for_unavailable_models=ns.allow_version_labels_for_unavailable_models,
        per_process_gpu_memory_fraction=ns.per_process_gpu_memory_fraction,
        enable_batching=ns.enable_batching,
        rest_api_timeout_in_ms=ns.rest_api_timeout_in_ms,
    )
