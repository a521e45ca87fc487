"""The gateway's one exception hierarchy. Each class carries its HTTP status; one handler in
``gateway.app`` turns any of them into ``{"error": "..."}``.

Lower layers' errors (gRPC status codes, HTTP client exceptions, backend HTTP statuses) are
translated into these at the boundary of each backend adapter, in one table each.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway answers with; ``status_code`` is the HTTP status.

    ``message`` is what the client reads; ``detail``, when given, is the full internal text
    (a backend's raw error, with addresses) that only the log gets, beside the request ID.
    """

    status_code = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.detail = detail


class BadRequest(GatewayError):
    """The request is malformed: bad JSON, wrong shape or dtype, a missing input."""

    status_code = 400


class Unauthorized(GatewayError):
    """No valid token was presented."""

    status_code = 401

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, detail: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer", **(headers or {})}, detail=detail)


class Forbidden(GatewayError):
    """The token is valid but may not do this."""

    status_code = 403


class Conflict(GatewayError):
    """The operation contradicts the current state (e.g. retiring a version a label uses)."""

    status_code = 409


class DeployFailed(GatewayError):
    """A deploy step failed; routing is unchanged. ``step`` names it."""

    def __init__(self, step: str, message: str, status_code: int = 400) -> None:
        super().__init__(f"deploy failed at step '{step}': {message}")
        self.step = step
        self.status_code = status_code


class RegistryDown(GatewayError):
    """The registry database cannot be reached; routing keeps its last state."""

    status_code = 503


class NotFound(GatewayError):
    """No such model, version or label."""

    status_code = 404


class PayloadTooLarge(GatewayError):
    """The request body is over the configured limit."""

    status_code = 413


class BackendError(GatewayError):
    """The backend answered with an error; the message includes the backend's own."""

    status_code = 502


class VersionMissing(BackendError):
    """The backend does not hold the version it was asked to run (it restarted empty, or it was
    unloaded meanwhile): the model did not run, so another replica of the stack may be asked."""


class BackendUnavailable(GatewayError):
    """The backend could not be reached, or refused more work; the client may retry shortly."""

    status_code = 503

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, detail: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": "1", **(headers or {})}, detail=detail)


class BackendUnreached(BackendUnavailable):
    """The call never reached the backend (the connection could not be made): sending it to
    another replica of the same stack is safe, the backend did no work."""


class BackendTimeout(GatewayError):
    """The backend did not answer within its deadline."""

    status_code = 504


class Overloaded(GatewayError):
    """The gateway itself is at a configured limit of concurrent work; the client may retry shortly.
    Refused at once, never queued, so a burst cannot pile up memory or latency."""

    status_code = 503

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={"Retry-After": "1", **(headers or {})})
