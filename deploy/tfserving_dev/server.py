"""Entry point: a TF Serving-compatible development server (gRPC + REST in one process).

Run as `python deploy/tfserving_dev/server.py --model_config_file=models.config ...` from
any directory. A stand-in for machines without containers; production uses the official
tensorflow/serving image.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if __package__ in (None, ""):
    # Run as a script: import the package, and keep this directory off sys.path so that
    # modules such as config.py cannot shadow unrelated top-level modules.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.append(str(_here.parent))

from tfserving_dev.config import (
    initial_model_config,
    prometheus_path,
    read_model_config,
    startup_error_message,
)
from tfserving_dev.errors import ServingError
from tfserving_dev.flags import ServerFlags, parse_flags

if TYPE_CHECKING:
    from tfserving_dev.server_core import ServerCore

log = logging.getLogger("tfserving_dev")

# A graceful stop normally takes well under a second; this bounds it if something hangs.
_EXIT_DEADLINE_SECONDS = 1.5
# main.cc returns -1 when Server::BuildAndStart fails: the process exits with 255.
_STARTUP_FAILURE = 255


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )


class _StopSignal:
    """SIGTERM/SIGINT handling: before the servers run, exit at once; after, stop cleanly."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.serving = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        log.info("Received %s, shutting down", signal.Signals(signum).name)
        if not self.serving:
            # Still importing TensorFlow or binding ports: nothing to drain.
            logging.shutdown()
            os._exit(0)
        self.event.set()
        # Bound the graceful stop in case something in it hangs.
        timer = threading.Timer(_EXIT_DEADLINE_SECONDS, os._exit, args=(0,))
        timer.daemon = True
        timer.start()


def _log_ignored_flags(flags: ServerFlags) -> None:
    if flags.per_process_gpu_memory_fraction:
        log.info("--per_process_gpu_memory_fraction=%s accepted; no GPU is used", flags.per_process_gpu_memory_fraction)
    if flags.enable_batching:
        log.info("--enable_batching accepted; requests run one by one")


def _start_config_file_polling(core: ServerCore, path: str, seconds: int) -> None:
    """Server::PollFilesystemAndReloadConfig every `seconds` (--model_config_file_poll_wait_seconds).

    Each round re-reads the file and reloads it like HandleReloadConfigRequest does; errors
    are logged and the previous config stays.
    """

    def run() -> None:
        while True:
            try:
                config = read_model_config(path)
            except ServingError as exc:
                log.error("Failed to read ModelServerConfig file: %s", exc.message)
            else:
                try:
                    core.reload_config(config)
                except ServingError as exc:
                    log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", exc.message)
            time.sleep(seconds)

    threading.Thread(target=run, name="tfs-config-poll", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; returns the process exit code."""
    flags = parse_flags(sys.argv[1:] if argv is None else argv)
    _setup_logging()
    stop = _StopSignal()
    stop.install()
    started = time.monotonic()
    try:
        config = initial_model_config(flags)
        metrics_path = prometheus_path(flags)
    except ServingError as exc:
        log.error("%s", startup_error_message(exc))
        return _STARTUP_FAILURE

    # Keep TensorFlow's C++ INFO/WARNING chatter out of the log unless asked for.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tfserving_dev.grpc_service import create_server
    from tfserving_dev.metrics import ServingMetrics
    from tfserving_dev.rest import RestApi, RestServer
    from tfserving_dev.servable import Servable
    from tfserving_dev.server_core import ServerCore

    log.info("TensorFlow imported in %.1f s", time.monotonic() - started)
    _log_ignored_flags(flags)
    core = ServerCore(
        loader=Servable,
        file_system_poll_wait_seconds=flags.file_system_poll_wait_seconds,
        max_num_load_retries=flags.max_num_load_retries,
        load_retry_interval_micros=flags.load_retry_interval_micros,
        allow_version_labels_for_unavailable_models=flags.allow_version_labels_for_unavailable_models,
    )
    core.start()
    try:
        # As ServerCore::Create: the ports open only once every configured model loaded.
        core.reload_config(config)
    except ServingError as exc:
        log.error("%s", startup_error_message(exc))
        return _STARTUP_FAILURE
    if flags.model_config_file and flags.model_config_file_poll_wait_seconds > 0:
        _start_config_file_polling(core, flags.model_config_file, flags.model_config_file_poll_wait_seconds)

    metrics = ServingMetrics()
    rest_server = None
    try:
        grpc_server, grpc_port = create_server(core, metrics, flags.host, flags.port)
        if flags.rest_api_port > 0:
            api = RestApi(core, metrics, metrics_path)
            rest_server = RestServer(api, flags.rest_api_host, flags.rest_api_port)
    except (OSError, RuntimeError) as exc:
        log.error("Failed to start server. Error: cannot bind a port: %s", exc)
        return _STARTUP_FAILURE
    log.info("Running gRPC ModelServer at %s:%d ...", flags.host, grpc_port)
    if rest_server is not None:
        rest_server.start()
        log.info("Exporting HTTP/REST API at %s:%d ...", flags.rest_api_host, rest_server.port)
        if metrics_path:
            url = f"http://{flags.rest_api_host}:{rest_server.port}{metrics_path}"
            log.info("Prometheus metrics at %s", url)
    elif metrics_path:
        log.warning("Prometheus metrics need the REST port; --rest_api_port is 0")
    log.info("Server ready in %.1f s", time.monotonic() - started)

    stop.serving = True
    while not stop.event.wait(0.5):
        pass
    if rest_server is not None:
        rest_server.stop()
    grpc_server.stop(grace=0.3).wait()
    core.stop()
    log.info("Server stopped")
    logging.shutdown()
    return 0


if __name__ == "__main__":
    exit_code = main()
    # Leave without interpreter finalization: with TensorFlow and gRPC native threads it
    # takes about a second, and aborts ("terminate called ...") if a load is in flight.
    # Everything worth keeping (logs) is flushed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
