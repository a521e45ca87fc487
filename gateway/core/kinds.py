"""The closed set of backend kinds, and what an adapter knows about its artifacts.

``Kind`` is the one list of serving stacks; the registry's ``BACKENDS`` and every table keyed by
kind derive from it. Each adapter module describes its own artifacts with an ``Artifacts`` value
(``gateway.backends.catalog`` gathers them), so that recognising a version directory, reading the
version an artifact states and naming its platform stay with the stack that defines them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal, Protocol, get_args

Kind = Literal["torchserve", "tfserving"]
"""A serving backend: ``torchserve`` (REST) or ``tfserving`` (gRPC)."""

KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
"""Every backend kind, in declaration order."""


def as_kind(value: str) -> Kind | None:
    """``value`` as a ``Kind`` when it names one, else None."""
    for kind in KINDS:
        if kind == value:
            return kind
    return None


class Artifacts(Protocol):
    """What a backend's version directory looks like, as its adapter knows it."""

    #: The backend kind these artifacts are served by.
    kind: Kind
    #: The Open Inference Protocol ``platform`` name of a model served from these artifacts.
    platform: str
    #: The server's name as a person reads it in messages (``TorchServe``).
    server: str

    def recognises(self, directory: Path) -> bool:
        """True when ``directory`` holds this backend's artifact (checks names only, cheap)."""
        ...

    def stated_version(self, directory: Path) -> str | None:
        """The version the artifact itself states, exactly as written ('' for a blank one).

        None when the artifact states no version (the directory's name is its version). Raises
        ``ValueError`` naming the file when the artifact cannot be read.
        """
        ...

    def rebuild_hint(self, version: int) -> str:
        """How to rebuild the artifact so it states ``version`` (a command to run)."""
        ...
