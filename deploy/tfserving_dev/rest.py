"""TF Serving's REST API (and the Prometheus page) on the stdlib ThreadingHTTPServer.

Paths and status codes follow model_servers/http_rest_api_util.cc and http_server.cc.
Each connection gets a thread, so blocking TensorFlow calls need no event loop.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from .errors import ServingError, from_exception, invalid_argument
from .grpc_service import SIGNATURE_DEF_FIELD, model_metadata, model_status
from .metrics import ServingMetrics, create_registry, render
from .rest_json import format_predict_response, parse_predict_body
from .servable import DEFAULT_SIGNATURE
from .server_core import ServerCore

log = logging.getLogger("tfserving_dev.rest")

_VERSION_OR_LABEL = r"(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
_PREDICT_PATH = re.compile(rf"/v1/models/([^/:]+){_VERSION_OR_LABEL}:(classify|regress|predict)", re.IGNORECASE)
_STATUS_PATH = re.compile(rf"/v1/models(?:/([^/:]+))?{_VERSION_OR_LABEL}(?:/(metadata))?", re.I)


def _model_spec(name: str, version: str | None, label: str | None) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name))
    if version is not None:
        spec.version.value = int(version)
    if label is not None:
        spec.version_label = urllib.parse.unquote(label)
    return spec


def _to_dict(message: Any) -> Any:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class RestApi:
    """Request handling, independent of the HTTP server plumbing."""

    def __init__(self, manager: ServerCore, metrics: ServingMetrics, metrics_path: str | None):
        self.manager = manager
        self.metrics = metrics
        self.metrics_path = metrics_path
        self.registry = create_registry(metrics) if metrics_path else None

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str, str]:
        """Return (HTTP status, content type, body text) for one request."""
        if self.registry is not None and method == "GET" and path == self.metrics_path:
            return 200, "text/plain; charset=utf-8", render(self.registry)
        try:
            payload = self._dispatch(method, path, body)
            return 200, "application/json", json.dumps(payload)
        except Exception as exc:
            error = from_exception(exc)
            if not isinstance(exc, ServingError):
                log.exception("Unexpected error on %s %s", method, path)
            return error.http_status, "application/json", json.dumps({"error": error.message})

    def _dispatch(self, method: str, path: str, body: bytes) -> Any:
        if not path.lower().startswith("/v1/"):
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Not found: {method} {path}")
        if method == "POST" and (match := _PREDICT_PATH.fullmatch(path)):
            name, version, label, verb = match.groups()
            if verb.lower() != "predict":
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"{verb} is not implemented by the tfserving_dev development server",
                )
            return self._predict(_model_spec(name, version, label), body)
        if method == "GET" and (match := _STATUS_PATH.fullmatch(path)):
            name, version, label, metadata = match.groups()
            if not name:
                raise invalid_argument("Missing model name in request.")
            spec = _model_spec(name, version, label)
            if metadata:
                request = get_model_metadata_pb2.GetModelMetadataRequest(
                    model_spec=spec, metadata_field=[SIGNATURE_DEF_FIELD]
                )
                response = model_metadata(self.manager, request)
                signature_defs = get_model_metadata_pb2.SignatureDefMap()
                response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_defs)
                return {
                    "model_spec": _to_dict(response.model_spec),
                    "metadata": {SIGNATURE_DEF_FIELD: _to_dict(signature_defs)},
                }
            status_request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
            return _to_dict(model_status(self.manager, status_request))
        raise invalid_argument(f"Malformed request: {method} {path}")

    def _predict(self, spec: model_pb2.ModelSpec, body: bytes) -> Any:
        if not body.strip():
            raise invalid_argument("JSON Parse error: The document is empty")
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid_argument(f"JSON Parse error: {exc}") from exc
        if not isinstance(document, dict):
            raise invalid_argument(f"JSON Value: {json.dumps(document)} Is not object")
        signature_name = document.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid_argument(
                f"JSON Value: {json.dumps(document)} not formatted correctly. "
                "'signature_name' key must be a string value."
            )
        servable, _ = self.manager.resolve(spec)
        signature_name = signature_name or DEFAULT_SIGNATURE
        try:
            signature = servable.signature(signature_name)
        except ServingError as exc:
            raise invalid_argument(f'Serving signature name: "{signature_name}" not found in signature def') from exc
        inputs, fmt = parse_predict_body(document, signature.inputs)
        outputs, runtime_us = servable.run(signature_name, inputs)
        self.metrics.record_runtime_latency(spec.name, "Predict", "TF1", runtime_us)
        return format_predict_response(outputs, fmt)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    # Headers and body go out in separate writes; without TCP_NODELAY the second waits for the
    # client's delayed ACK, about 40 ms a request on Linux.
    disable_nagle_algorithm = True
    server: _Server

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        path = urllib.parse.urlsplit(self.path).path
        status, content_type, text = self.server.api.handle(method, path, body)
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # open keep-alive connections must not block shutdown
    request_queue_size = 128  # socketserver's default backlog of 5 resets concurrent clients

    def __init__(self, address: tuple[str, int], api: RestApi) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.api = api


class RestServer:
    """The REST server running on a background thread."""

    def __init__(self, api: RestApi, host: str, port: int) -> None:
        self._server = _Server((host, port), api)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="tfs-rest",
            daemon=True,
        )

    def start(self) -> None:
        """Start accepting requests."""
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting requests and close the socket."""
        self._server.shutdown()
        self._server.server_close()
