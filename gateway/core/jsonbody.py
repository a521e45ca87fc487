"""JSON bodies read in one pass, within a size and a nesting-depth limit.

orjson is the parser. It refuses the ``NaN``, ``Infinity`` and ``-Infinity`` tokens that TF
Serving reads and writes (and so the gateway accepts), and it nests to 1024 levels; the standard
library parser takes those tokens natively but recurses on the C stack until ``RecursionError``.
So, before parsing, one scan of the body's structural bytes (``bytes.translate`` in C, then numpy
over what is left) measures the nesting depth and tells whether such a token stands outside a
string: a body over the limit is refused without being parsed, and exactly one parser reads the
rest: orjson without those tokens, the standard library (depth already bounded) with them. The
same scan tells whether a ``true`` or ``false`` stands outside a string (``parse``), which spares
the tensor decoders their own search for booleans among numbers (two substring searches over the
body cost twice the scan on a large one).

The scan costs about a fifth of orjson's own time on large numeric bodies and well under a
microsecond on small ones (``scripts/bench_json.py``).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, NamedTuple

import numpy as np
import orjson

#: The default nesting limit (``GATEWAY_MAX_JSON_DEPTH``): a tensor has at most 64 dimensions in
#: numpy, and a body wraps its tensors in one or two objects and a list.
DEFAULT_MAX_DEPTH: Final = 64

#: Brackets, string quotes, the first letters of NaN and Infinity, and the letters that only true
#: (r) and false (s) have among JSON's tokens outside strings (numbers: digits, sign, point, e;
#: null; NaN; Infinity).
_KEPT: Final = b'[]{}"NIrs'
_DROPPED: Final = bytes(c for c in range(256) if c not in _KEPT)
_ESCAPE: Final = re.compile(rb"\\.", re.DOTALL)  # an escape pair in a string: \" \\ \n \u...
_STRING: Final = re.compile(rb'"[^"]*"')  # a string, once only its marks are left
_SMALL: Final = 4096  # bodies up to this size try a cheaper test first (two counts)
_STEP: Final = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


class JsonLimit(ValueError):
    """The body is over a limit; the message says which limit, its setting, and by how much."""


class Tokens(NamedTuple):
    """What ``scan`` found outside the strings of a body."""

    non_finite: bool  # a NaN or Infinity token
    bools: bool  # a true or false token (may be True without one: a cheaper test said maybe)


def scan(body: bytes, max_depth: int) -> Tokens:
    """Check ``body``'s nesting against ``max_depth`` (``JsonLimit`` when deeper) and tell
    whether a ``NaN`` or ``Infinity`` token, and whether a ``true`` or ``false``, stands outside
    its strings.

    Exact for valid JSON (but for ``bools`` on a small body, where a substring search answers
    for less than the scan: True when ``true`` or ``false`` appears anywhere). For invalid JSON it
    agrees with a parser up to the first error (an unterminated string counts its brackets:
    stricter), which is as far as a parser reads, so the parser never nests deeper than ``max_depth``.
    """
    size = len(body)
    # The common small body: too short to nest past the limit, or fewer brackets than the limit.
    if size <= 2 * max_depth + 1 or (size <= _SMALL and body.count(b"[") + body.count(b"{") <= max_depth):
        if b"N" not in body and b"I" not in body:
            return Tokens(False, b"true" in body or b"false" in body)
    if b"\\" in body:  # escaped quotes must not count as string ends
        body = _ESCAPE.sub(b"", body)
    marks = body.translate(None, _DROPPED)
    if b'"' in marks:
        marks = _STRING.sub(b"", marks)  # brackets and letters inside strings do not count
    if len(marks) > max_depth:
        depth = int(np.cumsum(_STEP[np.frombuffer(marks, dtype=np.uint8)], dtype=np.int32).max())
        if depth > max_depth:
            raise JsonLimit(f"JSON nested {depth} levels deep, over the limit of {max_depth} (GATEWAY_MAX_JSON_DEPTH)")
    return Tokens(b"N" in marks or b"I" in marks, b"r" in marks or b"s" in marks)


def loads(body: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, max_bytes: int | None = None) -> Any:
    """Parse ``body`` (UTF-8 JSON, plus TF Serving's ``NaN``/``Infinity``/``-Infinity``) once.

    Raises ``JsonLimit`` for a body over ``max_bytes`` or nested deeper than ``max_depth``, and
    another ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError``) for invalid JSON.
    """
    return parse(body, max_depth=max_depth, max_bytes=max_bytes)[0]


def parse(body: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, max_bytes: int | None = None) -> tuple[Any, bool]:
    """``loads``, and whether the value may hold a boolean (False: it holds none; ``Tokens.bools``)."""
    if max_bytes is not None and len(body) > max_bytes:
        raise JsonLimit(f"JSON of {len(body)} bytes, over the limit of {max_bytes} (GATEWAY_MAX_BODY_BYTES)")
    tokens = scan(body, max_depth)
    try:
        if tokens.non_finite:
            return json.loads(body.decode("utf-8")), tokens.bools  # UTF-8 only, as orjson: no UTF-16/32 guessing
        return orjson.loads(body), tokens.bools
    except RecursionError:  # not reached with the scan's bound; never a 500 if it were
        raise JsonLimit(f"JSON nested over the limit of {max_depth} (GATEWAY_MAX_JSON_DEPTH)") from None
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # orjson's own 1024: the same answer as the scan's
            raise JsonLimit(f"JSON nested over the limit of {max_depth} (GATEWAY_MAX_JSON_DEPTH)") from None
        raise
