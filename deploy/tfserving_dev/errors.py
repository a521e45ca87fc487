"""Errors carrying a gRPC status code, mapped the way TF Serving maps them."""

from __future__ import annotations

import grpc

# TF Serving's ToHTTPStatusCode (model_servers/http_server.cc).
_HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A request or load failure with the status code TF Serving would report."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        # The form of absl::Status::ToString(), used when TF Serving nests one error in another.
        return f"{self.code.name}: {self.message}"

    @property
    def http_status(self) -> int:
        """The HTTP status TF Serving's REST API answers with for this error."""
        return _HTTP_STATUS.get(self.code, 500)


def code_from_number(number: int) -> grpc.StatusCode:
    """Return the gRPC status code for a numeric (tensorflow.error.Code) value."""
    return _CODE_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def invalid_argument(message: str) -> ServingError:
    """Shorthand for the most common request error."""
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def from_exception(exc: BaseException) -> ServingError:
    """Convert any exception (TensorFlow's OpError included) into a ServingError."""
    if isinstance(exc, ServingError):
        return exc
    # tf.errors.OpError carries tensorflow.error.Code, numerically equal to gRPC's codes;
    # duck-typed so this module does not import TensorFlow.
    error_code = getattr(exc, "error_code", None)
    message = getattr(exc, "message", None)
    if isinstance(error_code, int) and isinstance(message, str):
        return ServingError(code_from_number(error_code), message)
    if isinstance(exc, (TypeError, ValueError)):
        return invalid_argument(str(exc))
    return ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
