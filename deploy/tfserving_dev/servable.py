"""One loaded SavedModel version: its SignatureDefs and running a signature."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import message, text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from .errors import ServingError, from_exception, invalid_argument
from .tensors import array_dtype, dtype_name, proto_shape, shape_to_string

DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"


def _read_meta_graph(path: str) -> meta_graph_pb2.MetaGraphDef:
    """Read the 'serve' MetaGraphDef, the source of the SignatureDefs TF Serving reports."""
    saved_model = saved_model_pb2.SavedModel()
    pb_path = os.path.join(path, "saved_model.pb")
    pbtxt_path = os.path.join(path, "saved_model.pbtxt")
    try:
        if os.path.isfile(pb_path):
            with open(pb_path, "rb") as f:
                saved_model.ParseFromString(f.read())
        elif os.path.isfile(pbtxt_path):
            with open(pbtxt_path) as f:
                text_format.Parse(f.read(), saved_model)
        else:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}",
            )
    except (message.DecodeError, text_format.ParseError) as exc:
        raise ServingError(grpc.StatusCode.DATA_LOSS, f"Can't parse {pb_path} as binary proto: {exc}") from exc
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ServingError(
        grpc.StatusCode.NOT_FOUND,
        "Could not find meta graph def matching supplied tags: { serve }. To inspect "
        "available tag-sets in the SavedModel, please use the SavedModel CLI: "
        "`saved_model_cli`",
    )


class Servable:
    """A model version held in memory; safe to call from several threads."""

    def __init__(self, name: str, version: int, path: str) -> None:
        self.name = name
        self.version = version
        self.path = path
        self._meta_graph = _read_meta_graph(path)
        try:
            loaded = tf.saved_model.load(path, tags=[SERVE_TAG])
        except Exception as exc:
            raise from_exception(exc) from exc
        # Keep the loaded object alive: the signature functions reference its variables.
        self._loaded = loaded
        self._functions: dict[str, Any] = dict(loaded.signatures)

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        """Return every SignatureDef of the 'serve' MetaGraph, as GetModelMetadata does."""
        result = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in self._meta_graph.signature_def.items():
            result.signature_def[key].CopyFrom(signature)
        return result

    def signature(self, signature_name: str) -> meta_graph_pb2.SignatureDef:
        """Return a SignatureDef; the empty name means serving_default."""
        key = signature_name or DEFAULT_SIGNATURE
        if key not in self._meta_graph.signature_def or key not in self._functions:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.')
        return self._meta_graph.signature_def[key]

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> tuple[dict[str, np.ndarray], int]:
        """Validate inputs against the signature and run it.

        Returns the outputs (filtered) and the runtime in microseconds.
        """
        key = signature_name or DEFAULT_SIGNATURE
        signature = self.signature(key)
        _check_input_names(signature, inputs.keys())
        outputs_wanted = _check_output_filter(signature, output_filter)
        feeds: dict[str, tf.Tensor] = {}
        for index, (alias, array) in enumerate(sorted(inputs.items())):
            info = signature.inputs[alias]
            _check_input_tensor(key, index, alias, info, array)
            feeds[alias] = tf.convert_to_tensor(array, dtype=tf.as_dtype(info.dtype))
        start = time.perf_counter()
        try:
            results = self._functions[key](**feeds)
        except Exception as exc:
            raise from_exception(exc) from exc
        runtime_us = int((time.perf_counter() - start) * 1e6)
        if not isinstance(results, Mapping):
            raise ServingError(grpc.StatusCode.INTERNAL, "Predict internal error")
        return {alias: np.asarray(results[alias]) for alias in outputs_wanted}, runtime_us


def _check_input_names(signature: meta_graph_pb2.SignatureDef, names: Any) -> None:
    """TF Serving's input-set checks (predict_util.cc), with its messages."""
    sent = set(names)
    expected = set(signature.inputs)
    if len(sent) != len(expected):
        extra = ",".join(sorted(sent - expected))
        missing = ",".join(sorted(expected - sent))
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{extra}}}. Missing but required: {{{missing}}}."
        )
    for alias in sorted(sent):
        if alias not in expected:
            raise invalid_argument(
                f"input tensor alias not found in signature: {alias}. Inputs expected to be "
                f"in the set {{{','.join(sorted(expected))}}}."
            )


def _check_output_filter(signature: meta_graph_pb2.SignatureDef, output_filter: Sequence[str]) -> list[str]:
    if not output_filter:
        return sorted(signature.outputs)
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return list(output_filter)


def _check_input_tensor(
    signature_name: str,
    index: int,
    alias: str,
    info: meta_graph_pb2.TensorInfo,
    array: np.ndarray,
) -> None:
    """Check dtype and shape up front, so errors name the input (TF's own do not)."""
    got = array_dtype(array)
    if got != info.dtype:
        raise invalid_argument(
            f"Expects arg[{index}] to be {dtype_name(info.dtype)} but {dtype_name(got)} is "
            f"provided: input '{alias}' of signature '{signature_name}' has the wrong dtype"
        )
    expected = proto_shape(info.tensor_shape)
    if expected is None:
        return
    actual = list(array.shape)
    compatible = len(actual) == len(expected) and all(e < 0 or e == a for e, a in zip(expected, actual, strict=True))
    if not compatible:
        raise invalid_argument(
            f"input '{alias}' of signature '{signature_name}' expects shape "
            f"{shape_to_string(expected)} but got {shape_to_string(actual)}"
        )
