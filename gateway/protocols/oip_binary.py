"""The Open Inference Protocol's binary tensor data extension (as Triton and KServe define it).

A request or answer is a JSON header followed by raw tensor bytes; the HTTP header
``Inference-Header-Content-Length`` gives the JSON header's length. A binary tensor says how many
bytes it takes with ``"parameters": {"binary_data_size": n}`` and has no ``data``; the bytes of the
binary tensors follow the JSON header in the order the tensors are listed. Values are little-endian
and row-major; BOOL takes one byte per value; BYTES is, per element, a 4-byte little-endian length
followed by that many bytes; BF16 is the upper two bytes of an FP32 value.

Pure functions over bytes and numpy: no JSON number parsing for binary tensors (``np.frombuffer``
of the right dtype, reshaped), and every size checked exactly: a binary tensor's bytes must be its
shape's element count times its item size, every byte after the JSON header must belong to exactly
one binary input, and the header's length must lie within the body. A mistake is a 400 naming the
tensor and what was expected.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from gateway.core.errors import BadRequest
from gateway.core.tensors import DATATYPES

#: The request and response header that gives the JSON header's length.
HEADER = "Inference-Header-Content-Length"
#: The extension's name in the server metadata (``GET /v2``).
EXTENSION = "binary_tensor_data"
#: The content type of an answer with binary outputs (Triton's).
MEDIA_TYPE = "application/octet-stream"

_LENGTH = struct.Struct("<I")


def header_length(headers: Mapping[str, str], body_size: int) -> int | None:
    """The JSON header's length from the request headers; ``None`` when the body is all JSON."""
    value = headers.get(HEADER.lower())
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise BadRequest(f"{HEADER} header must be a non-negative integer, got {value[:40]!r}")
    length = int(text)
    if length > body_size:
        raise BadRequest(f"{HEADER} header is {length} but the request body has only {body_size} bytes")
    return length


def binary_size(where: str, parameters: Any) -> int | None:
    """A tensor's ``binary_data_size`` parameter, or ``None`` when its values are in ``data``."""
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequest(f"{where}: binary_data_size must be a non-negative integer, got {size!r}")
    return size


def wants_binary(where: str, parameters: Any, key: str) -> bool | None:
    """A boolean parameter (``binary_data`` of an output, ``binary_data_output`` of a request)."""
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{where}: {key} must be true or false, got {value!r}")
    return value


class BinaryReader:
    """The bytes after a request's JSON header, handed out to the binary inputs in order."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.offset = 0

    def take(self, name: str, size: int) -> memoryview:
        """The next ``size`` bytes, for input ``name``."""
        left = len(self.data) - self.offset
        if size > left:
            raise BadRequest(
                f"input '{name}': binary_data_size is {size} but only {left} bytes of binary data are left "
                f"after the JSON header (of {len(self.data)})"
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def finish(self) -> None:
        """Every byte after the JSON header must belong to a binary input."""
        left = len(self.data) - self.offset
        if left:
            raise BadRequest(
                f"{left} bytes of binary data are left over after the JSON header and the binary inputs "
                f"(their binary_data_size add up to {self.offset} of {len(self.data)} bytes)"
            )


def to_array(name: str, raw: memoryview | bytes, datatype: str, shape: list[int]) -> np.ndarray:
    """A binary input's bytes as an array of ``datatype`` and ``shape`` (BF16 widened to FP32)."""
    where = f"input '{name}'"
    count = math.prod(shape)
    if datatype == "BYTES":
        flat = bytes_elements(where, raw, count)
    else:
        wire = np.dtype("<u2") if datatype == "BF16" else _wire_dtype(where, datatype)
        expected = count * wire.itemsize
        if len(raw) != expected:
            raise BadRequest(
                f"{where}: shape {shape} of {datatype} needs {count} x {wire.itemsize} = {expected} bytes, "
                f"binary_data_size is {len(raw)}"
            )
        flat = np.frombuffer(raw, dtype=wire)
        if datatype == "BF16":
            flat = (flat.astype(np.uint32) << 16).view(np.float32)
        elif datatype == "BOOL":
            flat = flat.view(np.uint8) != 0
        elif not wire.isnative:
            flat = flat.astype(wire.newbyteorder("="))
    try:
        return flat.reshape(shape)
    except ValueError as exc:  # more dimensions than numpy allows
        raise BadRequest(f"{where}: shape {shape} is not a valid tensor shape ({exc})") from None


def _wire_dtype(where: str, datatype: str) -> np.dtype[Any]:
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        names = ", ".join([*DATATYPES, "BF16"])
        raise BadRequest(f"{where}: datatype must be one of {names}, got {datatype!r}")
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    return dtype.newbyteorder("<")


def bytes_elements(where: str, raw: memoryview | bytes, count: int) -> np.ndarray:
    """``count`` BYTES elements, each a 4-byte little-endian length and its bytes, filling ``raw``
    exactly (the binary tensor extension's and OIP gRPC's raw contents share this form)."""
    data = bytes(raw)
    values: list[bytes] = []
    offset = 0
    while offset < len(data):
        if len(values) == count:
            raise BadRequest(f"{where}: {len(data) - offset} bytes left over after its {count} BYTES elements")
        if offset + 4 > len(data):
            raise BadRequest(f"{where}: BYTES element {len(values)} has a truncated 4-byte length")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + length > len(data):
            raise BadRequest(
                f"{where}: BYTES element {len(values)} is {length} bytes long, "
                f"past the end of the input's {len(data)} bytes"
            )
        values.append(data[offset : offset + length])
        offset += length
    if len(values) != count:
        raise BadRequest(f"{where}: shape needs {count} BYTES elements, the binary data holds {len(values)}")
    array = np.empty(count, dtype=object)
    array[:] = values
    return array


def to_bytes(array: np.ndarray, datatype: str | None = None) -> bytes:
    """An array's values in the binary form: little-endian, row-major (``datatype="BF16"`` rounds
    FP32 values to the nearest BF16, ties to even)."""
    if datatype == "BF16":
        bits = np.ascontiguousarray(array, dtype="<f4").view("<u4").astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        nan = np.isnan(array.reshape(-1)) if array.size else np.zeros(0, bool)
        out = rounded.astype("<u2").reshape(-1)
        out[nan] = 0x7FC0
        return out.tobytes()
    if array.dtype.kind in "OSU":
        parts: list[bytes] = []
        for value in array.reshape(-1):
            item = value.encode() if isinstance(value, str) else bytes(value)
            parts += (_LENGTH.pack(len(item)), item)
        return b"".join(parts)
    if array.dtype.kind == "b":
        return np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
