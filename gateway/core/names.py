"""The one rule for model names, label names and version numbers, used by every entry point.

A name reaches the model store (as a directory), the registry, TF Serving's model config,
TorchServe's management URLs, response headers, metric labels and logs, so every way in
(inference paths, the admin API, deploys, the registry, the store scan, the state file, the CLI)
checks it here, with ``fullmatch``: ``re.match`` with ``$`` lets a final newline through
(``'evil\\n'``), since ``$`` also matches just before one. Versions are ASCII decimal digits only:
``str.isdigit`` and ``int`` also take other scripts' digits (``int('\\u0661')`` is 1).

``deploy/docker/stack_init.py`` runs without the gateway installed and keeps its own copy of
``MODEL_NAME_PATTERN``; ``tests/deploy/test_consistency.py`` checks that both agree.
"""

from __future__ import annotations

import re
from typing import Final

from gateway.core.errors import BadRequest

#: Model names: 1-128 ASCII letters, digits, '_', '.', '-', starting with a letter or digit.
MODEL_NAME_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}"
#: Labels start with a letter, so that a label can never be mistaken for a version number.
LABEL_PATTERN: Final = r"[A-Za-z][A-Za-z0-9_.\-]{0,63}"
#: The largest version: versions are stored as signed 64-bit integers (TF Serving's int64 too).
MAX_VERSION: Final = 2**63 - 1

_MODEL_NAME: Final = re.compile(MODEL_NAME_PATTERN)
_LABEL: Final = re.compile(LABEL_PATTERN)
_DIGITS: Final = re.compile(r"[0-9]{1,19}")

MODEL_RULE: Final = "1-128 of letters, digits, '_', '.', '-', starting with a letter or digit"
LABEL_RULE: Final = "1-64 of letters, digits, '_', '.', '-', starting with a letter"
VERSION_RULE: Final = f"ASCII digits 0-9, at most {MAX_VERSION}"


class InvalidName(ValueError):
    """A model name, label or version that breaks the rule; the message says which rule."""


def shown(value: object) -> str:
    """``value`` as safe to quote in a message or a log line: escaped (``repr``) and cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_model_name(value: object) -> bool:
    """Whether ``value`` is a valid model name."""
    return isinstance(value, str) and _MODEL_NAME.fullmatch(value) is not None


def is_label_name(value: object) -> bool:
    """Whether ``value`` is a valid label name."""
    return isinstance(value, str) and _LABEL.fullmatch(value) is not None


def model_name(value: object) -> str:
    """``value`` if it is a valid model name, else ``InvalidName``."""
    if not is_model_name(value):
        raise InvalidName(f"invalid model name {shown(value)}: {MODEL_RULE}")
    assert isinstance(value, str)
    return value


def label_name(value: object) -> str:
    """``value`` if it is a valid label name, else ``InvalidName``."""
    if not is_label_name(value):
        raise InvalidName(f"invalid label name {shown(value)}: {LABEL_RULE}")
    assert isinstance(value, str)
    return value


def require_model_name(value: object) -> str:
    """``value`` if it is a valid model name, else a 400 (``BadRequest``) that states the rule."""
    try:
        return model_name(value)
    except InvalidName as exc:
        raise BadRequest(str(exc)) from None


def require_label_name(value: object) -> str:
    """``value`` if it is a valid label name, else a 400 (``BadRequest``) that states the rule."""
    try:
        return label_name(value)
    except InvalidName as exc:
        raise BadRequest(str(exc)) from None


def version_number(value: object, what: str = "version") -> int:
    """``value`` if it is an ``int`` version in [1, MAX_VERSION] (bools refused), else ``InvalidName``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VERSION:
        raise InvalidName(f"{what} must be a positive integer, got {shown(value)} ({VERSION_RULE})")
    return value


def parse_version(text: str, what: str = "version") -> int:
    """A version written in text (a URL segment, a CLI argument): ASCII digits, leading zeros
    allowed as TF Serving allows them; ``InvalidName`` otherwise."""
    if not isinstance(text, str) or _DIGITS.fullmatch(text) is None or not 1 <= int(text) <= MAX_VERSION:
        raise InvalidName(f"{what} must be a positive integer, got {shown(text)} ({VERSION_RULE})")
    return int(text)


def canonical_version(text: str) -> int | None:
    """The version a directory or TorchServe version string names if it is written exactly as the
    gateway writes versions (``1``, ``12``: no sign, no leading zero, ASCII digits), else None.

    TorchServe keys versions by their exact string (``1.0``, ``01`` and ``1`` are three versions),
    so anything else is never read loosely as a number.
    """
    if _DIGITS.fullmatch(text) is None or text.startswith("0") or int(text) > MAX_VERSION:
        return None
    return int(text)
