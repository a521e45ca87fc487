"""Open Inference Protocol gRPC tensors <-> numpy arrays, exactly.

A tensor's values come typed, in its ``contents`` field of its datatype, or packed, one entry of
``raw_input_contents`` per input in order: little-endian, row-major, BOOL as one byte, BYTES as a
4-byte little-endian length then the bytes (as Triton defines the raw form). FP16 travels only
packed, as the protocol has no typed field for it.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from gateway.core.errors import BadRequest
from gateway.core.tensors import DATATYPES, Signature, check_shape, datatype_of
from gateway.protocols.oip_binary import bytes_elements
from gateway.protocols.rpc.protos import inference_pb2 as pb

#: Datatype -> the ``InferTensorContents`` field its typed values travel in.
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_LENGTH = struct.Struct("<I")


def _typed(where: str, datatype: str, contents: pb.InferTensorContents) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise BadRequest(f"{where}: datatype {datatype} has no typed contents; send it in raw_input_contents")
    values = getattr(contents, field)
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
        return array
    dtype = DATATYPES[datatype]
    if dtype.kind in "iu" and len(values):
        wide = np.asarray(values, dtype=np.uint64 if datatype == "UINT64" else np.int64)
        info = np.iinfo(dtype)
        if int(wide.min()) < info.min or int(wide.max()) > info.max:
            raise BadRequest(f"{where}: value out of range for {datatype} [{info.min}, {info.max}]")
        return wide.astype(dtype)
    return np.asarray(values, dtype=dtype)


def _raw(where: str, datatype: str, raw: bytes, count: int) -> np.ndarray:
    if datatype == "BYTES":
        return bytes_elements(where, raw, count)
    dtype = DATATYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(
            f"{where}: raw contents have {len(raw)} bytes; {count} values of {datatype} need {count * dtype.itemsize}"
        )
    if datatype == "BOOL":
        flags = np.frombuffer(raw, dtype=np.uint8)
        if flags.size and int(flags.max()) > 1:
            raise BadRequest(f"{where}: BOOL raw contents must be bytes 0 or 1")
        return flags.astype(np.bool_)
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)


def decode_inputs(request: pb.ModelInferRequest, signature: Signature) -> dict[str, np.ndarray]:
    """The request's input tensors, checked against ``signature`` with the REST door's messages."""
    raw_contents = request.raw_input_contents
    if raw_contents and len(raw_contents) != len(request.inputs):
        raise BadRequest(
            f"raw_input_contents has {len(raw_contents)} entries for {len(request.inputs)} inputs; "
            "give one per input, in order, or none"
        )
    if not request.inputs:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    inputs: dict[str, np.ndarray] = {}
    for i, item in enumerate(request.inputs):
        if not item.name:
            raise BadRequest(f"inputs[{i}].name must be a string")
        where = f"input '{item.name}'"
        if item.name in inputs:
            raise BadRequest(f"{where} is given more than once in 'inputs'")
        spec = signature.input(item.name)
        if item.datatype not in DATATYPES:
            raise BadRequest(f"{where}: datatype must be one of {', '.join(DATATYPES)}, got {item.datatype!r}")
        if item.datatype != spec.datatype:
            raise BadRequest(f"{where}: expected datatype {spec.datatype}, got {item.datatype}")
        shape = list(item.shape)
        if any(d < 0 for d in shape):
            raise BadRequest(f"{where}: shape must be a list of non-negative integers")
        count = math.prod(shape)
        if raw_contents:
            array = _raw(where, item.datatype, raw_contents[i], count)
        else:
            array = _typed(where, item.datatype, item.contents)
        if array.size != count:
            raise BadRequest(f"{where}: shape {shape} needs {count} values, got {array.size}")
        try:
            array = array.reshape(shape)
        except ValueError as exc:
            raise BadRequest(f"{where}: shape {shape} is not a valid tensor shape ({exc})") from None
        check_shape(spec, array)
        inputs[item.name] = array
    for spec in signature.inputs:
        if spec.name not in inputs:
            raise BadRequest(f"missing input '{spec.name}'")
    return inputs


def output_names(request: pb.ModelInferRequest, signature: Signature) -> tuple[str, ...]:
    """The outputs the request asks for (none: all), each one the signature has."""
    names = tuple(o.name for o in request.outputs)
    known = {s.name for s in signature.outputs}
    for name in names:
        if name not in known:
            raise BadRequest(f"unknown output '{name}' (outputs: {', '.join(sorted(known))})")
    return names


def _raw_of(array: np.ndarray) -> bytes:
    if array.dtype.kind in "OSU":
        parts: list[bytes] = []
        for value in array.ravel().tolist():
            data = value if isinstance(value, bytes) else str(value).encode()
            parts += [_LENGTH.pack(len(data)), data]
        return b"".join(parts)
    if array.dtype == np.bool_:
        return np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def encode_outputs(
    outputs: dict[str, np.ndarray], names: tuple[str, ...], response: pb.ModelInferResponse, *, raw: bool
) -> None:
    """Add the selected outputs to ``response``: packed in ``raw_output_contents`` when ``raw``, else
    typed (FP16, which has no typed field, is packed either way, as the protocol requires)."""
    selected = [n for n in (names or tuple(outputs)) if n in outputs]
    packed = raw or any(datatype_of(outputs[n]) not in CONTENTS_FIELD for n in selected)
    for name in selected:
        array = outputs[name]
        datatype = datatype_of(array)
        tensor = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if packed:
            response.raw_output_contents.append(_raw_of(array))
        else:
            values: Any = array.ravel().tolist()
            if datatype == "BYTES":
                values = [v if isinstance(v, bytes) else str(v).encode() for v in values]
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(values)
