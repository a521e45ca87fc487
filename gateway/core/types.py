"""The one interface every backend adapter implements, and the shapes that cross it.

An adapter is chosen once, when the routing table is built (each ``Target`` holds its backend),
never by comparing backend names on each request. The interface sits here, in the bottom layer,
with the shapes (target, request, result) that the front doors, routing, the control plane and the
adapters all pass each other; the adapters in ``gateway.backends`` implement it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np

from gateway.core.errors import BackendError
from gateway.core.kinds import Kind
from gateway.core.names import canonical_version

if TYPE_CHECKING:
    from gateway.core.tensors import Signature

Form = Literal["row", "column"]


def version_number(text: str) -> int | None:
    """The version ``text`` names if it is written exactly as the gateway writes versions, else None.

    Versions are positive integers in their canonical decimal form: ``1``, ``12``. TorchServe keys
    versions by their exact string (``1.0``, ``01`` and ``1`` are three different versions), so
    anything else is never read loosely as a number (the rule is ``gateway.core.names``').
    """
    return canonical_version(text)


@dataclass(frozen=True, slots=True)
class Target:
    """One routable model version on one backend. Backends are always addressed by version."""

    model: str
    version: int
    backend: Backend
    signature: Signature | None = None


@dataclass(slots=True)
class InferenceRequest:
    """A decoded inference request.

    ``inputs`` are checked against the version's signature. ``body`` is the caller's TF Serving
    REST JSON body when it may be forwarded unchanged (a backend that speaks that form, such as the
    example TorchServe handler, then skips re-encoding); ``form`` says which form the caller used
    and wants back.
    """

    inputs: dict[str, np.ndarray]
    form: Form = "column"
    body: bytes | None = None
    output_filter: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Passthrough:
    """The pass-through request variant: the caller's body and content type, sent on unchanged to
    a backend that takes bodies as they are (``Backend.passthrough``: TorchServe's own paths)."""

    body: bytes
    content_type: str


#: Reads a body in a TF Serving REST form into output arrays, typed by the signature if there is one.
Decode = Callable[[bytes, Form, "Signature | None"], dict[str, np.ndarray]]


class InferenceResult:
    """A backend's answer, in one shape whatever the backend sent: every consumer reads its arrays
    with ``outputs(signature)``.

    An answer that came as arrays (TF Serving's gRPC) holds them. One that came as a body
    (TorchServe's handler answers TF Serving REST JSON, and a pass-through answer is the handler's
    own bytes) holds the body, its ``content_type`` and the adapter's ``decode``; its arrays are
    read at the first ``outputs`` call, once (a later call with the same signature reuses them).
    ``form`` is the REST form the body is in (None when only the caller's request can tell, as for
    a pass-through answer: ``in_form``); a codec that writes that form sends the body on as it came,
    without reading it (``restjson.result_body``).
    """

    __slots__ = ("_decode", "_outputs", "_read_with", "body", "content_type", "form")

    def __init__(
        self,
        outputs: dict[str, np.ndarray] | None = None,
        *,
        body: bytes | None = None,
        form: Form | None = "column",
        decode: Decode | None = None,
        content_type: str = "application/json",
    ) -> None:
        self._outputs = outputs
        self._decode = decode
        self._read_with: Signature | None = None
        self.body = body
        self.form = form
        self.content_type = content_type

    def outputs(self, signature: Signature | None) -> dict[str, np.ndarray]:
        """The output arrays; a body is read now (typed by ``signature``) unless it already was."""
        outputs = self._outputs
        if outputs is None or (self._decode is not None and self._read_with is not signature):
            if self._decode is None or self.body is None or self.form is None:
                raise BackendError("the backend's answer is a body in no form the gateway reads")
            outputs = self._outputs = self._decode(self.body, self.form, signature)
            self._read_with = signature
        return outputs

    def in_form(self, form: Form) -> InferenceResult:
        """The same body, read as the REST form ``form`` (a pass-through answer, in its caller's form)."""
        return InferenceResult(body=self.body, form=form, decode=self._decode, content_type=self.content_type)


@dataclass(frozen=True, slots=True)
class VersionStatus:
    """A version's state as the backend reports it, in TF Serving's state words.

    ``NOT_FOUND`` (the backend does not know the version: never loaded, forgotten by a restart,
    or not yet discovered, as TF Serving right after a reload) is not ``END`` (the backend loaded
    or tried to load it and is done with it; ``error`` then says why, if it failed). ``UNKNOWN``
    means the backend could not be asked.
    """

    version: int
    state: str  # UNKNOWN, NOT_FOUND, START, LOADING, AVAILABLE, UNLOADING, END
    error: str = ""
    details: dict[str, object] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.state == "AVAILABLE"

    @property
    def gone(self) -> bool:
        """Neither loaded nor loading: the backend never had it, forgot it, or ended it."""
        return self.state in ("NOT_FOUND", "END")


class Forwarder(Protocol):
    """A backend's pass-through: the caller's body goes to the model as it is."""

    async def forward(self, target: Target, request: Passthrough) -> InferenceResult:
        """Send the body unchanged; the answer is the model's body and content type (``form`` None:
        read it with ``in_form``). Raise a ``GatewayError`` on failure."""
        ...


@runtime_checkable
class Backend(Protocol):
    """A model server the gateway forwards to: TorchServe, TF Serving, or a test double."""

    #: Name used in response headers and metrics: ``torchserve`` or ``tfserving``.
    kind: Kind

    @property
    def passthrough(self) -> Forwarder | None:
        """How the backend takes a caller's body as it is (TorchServe's own protocol), or None
        when it takes only decoded requests; the pipeline asks this before passing a body on."""
        ...

    async def infer(self, target: Target, request: InferenceRequest) -> InferenceResult:
        """Run one inference on ``target``; raise a ``GatewayError`` on failure."""
        ...

    async def signature(self, model: str, version: int) -> Signature | None:
        """The version's signature as the backend describes it, if it can."""
        ...

    async def status(self, model: str, version: int) -> VersionStatus:
        """The version's state on the backend; never raises for an unreachable backend."""
        ...

    async def load(self, model: str, version: int, keep: Mapping[str, Collection[int]]) -> None:
        """Ask the backend to load ``<store>/<model>/<version>``; returns once it accepted.

        ``keep`` is every version of this backend that must stay loaded (a backend whose reload
        replaces its whole model list, as TF Serving's does, needs it; others ignore it).
        Loading a version that is already loaded is harmless.
        """
        ...

    async def unload(self, model: str, version: int, keep: Mapping[str, Collection[int]]) -> None:
        """Ask the backend to unload a version; unloading one that is not loaded is harmless."""
        ...

    def write_startup(self, keep: Mapping[str, Collection[int]], defaults: Mapping[str, int]) -> bool:
        """Persist what the backend must load when it starts again: ``keep``, every version of
        this backend the registry has available, and ``defaults``, each model's stable version
        where it is one of them. A no-op without a start-up file; True if the file changed.
        Blocking file I/O: call it in a worker thread."""
        ...

    async def set_default(self, model: str, version: int) -> None:
        """Make ``version`` the backend's own default version of ``model``, where it has one.

        The gateway always addresses explicit versions; this only keeps the backend's notion in
        step with the gateway's ``stable`` label (TorchServe will not unregister its default
        version while others are registered). A backend without defaults does nothing.
        """
        ...

    async def start(self) -> None:
        """Open connections; called once inside the running event loop."""
        ...

    async def close(self) -> None:
        """Close connections."""
        ...
