"""Pure functions: flags, JSON tensor encoding, the metrics page."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tfserving_dev.errors import ServingError
from tfserving_dev.flags import parse_flags
from tfserving_dev.metrics import ServingMetrics, create_registry, render
from tfserving_dev.rest_json import COLUMNAR, ROW, format_predict_response, parse_predict_body


def test_flags_accept_both_spellings_and_bare_booleans() -> None:
    flags = parse_flags(
        [
            "--port",
            "9000",
            "--rest_api_port=0",
            "--model_base_path=/m",
            "--allow_version_labels_for_unavailable_models",
        ]
    )
    assert (flags.port, flags.rest_api_port, flags.model_name) == (9000, 0, "default")
    assert flags.allow_version_labels_for_unavailable_models is True
    assert flags.host == flags.rest_api_host == "127.0.0.1"
    flags = parse_flags(["--model_config_file=c", "--allow_version_labels_for_unavailable_models=false"])
    assert flags.allow_version_labels_for_unavailable_models is False
    with pytest.raises(SystemExit):
        parse_flags(["--model_config_file=c", "--model_base_path=/m"])
    with pytest.raises(SystemExit):
        parse_flags(["--model_base_path=/m", "--rest_api"])  # no abbreviations


def _infos(**dtypes: int) -> dict[str, meta_graph_pb2.TensorInfo]:
    return {name: meta_graph_pb2.TensorInfo(dtype=dtype) for name, dtype in dtypes.items()}


def test_json_rows_and_columns() -> None:
    infos = _infos(a=types_pb2.DT_FLOAT, s=types_pb2.DT_STRING)
    arrays, fmt = parse_predict_body({"instances": [{"a": [1, 2], "s": {"b64": "aGk="}}]}, infos)
    assert fmt == ROW
    assert arrays["a"].dtype == np.float32 and arrays["a"].shape == (1, 2)
    assert arrays["s"].tolist() == [b"hi"]
    arrays, fmt = parse_predict_body({"inputs": {"a": 1.5, "s": "x"}}, infos)
    assert fmt == COLUMNAR and arrays["a"].shape == () and arrays["s"].tolist() == b"x"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [[1, 2], [3]]}, "Expecting shape [2] but got: [1]"),
        ({"instances": [[[1], 2]]}, "found at incorrect level"),
        ({"instances": [[1, [2]]]}, "Encountered list at unexpected level: 1 expected < 1"),
        ({"instances": [True]}, "JSON Value: true Type: True is not of expected type: int64"),
        ({"instances": [1.5]}, "is not of expected type: int64"),
        ({"instances": []}, "No values in 'instances' array"),
        ({"instances": [1], "inputs": [1]}, "expecting only one of 'inputs' or 'instances'"),
        ({"instances": [{"y": 1}]}, "does not have named input: y"),
    ],
)
def test_json_errors(body: object, message: str) -> None:
    with pytest.raises(ServingError) as info:
        parse_predict_body(body, _infos(x=types_pb2.DT_INT64))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.message


def test_json_float_precision_and_unpadded_b64() -> None:
    infos = _infos(f=types_pb2.DT_FLOAT, s=types_pb2.DT_STRING)
    with pytest.raises(ServingError, match="without loss of precision"):
        parse_predict_body({"inputs": {"f": 2**24, "s": "x"}}, infos)
    with pytest.raises(ServingError, match="without loss of precision"):
        parse_predict_body({"inputs": {"f": 1e39, "s": "x"}}, infos)
    arrays, _ = parse_predict_body({"inputs": {"f": [float("nan"), 2**24 - 1], "s": {"b64": "aGk"}}}, infos)
    assert arrays["s"].tolist() == b"hi"


def test_json_outputs() -> None:
    outputs = {"p": np.array([[0.2], [1.0]], np.float32), "id_bytes": np.array([b"\x00", b"a"], object)}
    assert format_predict_response(outputs, ROW) == {
        "predictions": [{"id_bytes": {"b64": "AA=="}, "p": [0.2]}, {"id_bytes": {"b64": "YQ=="}, "p": [1.0]}]
    }
    assert format_predict_response({"p": outputs["p"]}, COLUMNAR) == {"outputs": [[0.2], [1.0]]}
    with pytest.raises(ServingError, match="inconsistent batch size"):
        format_predict_response({"a": np.zeros(2), "b": np.zeros(3)}, ROW)


def test_metrics_page_uses_tf_serving_names_and_buckets() -> None:
    metrics = ServingMetrics()
    metrics.record_request("m", grpc.StatusCode.OK)
    metrics.record_request("m", grpc.StatusCode.INVALID_ARGUMENT)
    metrics.record_request_latency("m", "Predict", "GRPC", 25.0)
    page = render(create_registry(metrics)).splitlines()
    assert page[:3] == [
        "# TYPE :tensorflow:serving:request_count counter",
        ':tensorflow:serving:request_count{model_name="m",status="INVALID_ARGUMENT"} 1',
        ':tensorflow:serving:request_count{model_name="m",status="OK"} 1',
    ]
    prefix = ':tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="GRPC",'
    assert f'{prefix}le="18"}} 0' in page
    assert f'{prefix}le="32.4"}} 1' in page
    assert f'{prefix}le="+Inf"}} 1' in page
    assert ':tensorflow:serving:request_latency_sum{model_name="m",API="Predict",entrypoint="GRPC"} 25' in page


def test_flags_have_tensorflow_model_servers_names_and_defaults() -> None:
    # server.h: max_num_load_retries 5, load_retry_interval_micros one minute,
    # file_system_poll_wait_seconds 1, fs_model_config_poll_wait_seconds 0.
    flags = parse_flags(["--model_base_path=/m"])
    assert flags.max_num_load_retries == 5
    assert flags.load_retry_interval_micros == 60_000_000
    assert flags.file_system_poll_wait_seconds == 1
    assert flags.model_config_file_poll_wait_seconds == 0
    assert (flags.per_process_gpu_memory_fraction, flags.enable_batching) == (0.0, False)
    assert flags.rest_api_timeout_in_ms == 30000
    # Every flag the project's compose file, Kubernetes manifests and launchers pass.
    flags = parse_flags(
        [
            "--model_config_file=/c",
            "--per_process_gpu_memory_fraction=0.4",
            "--model_config_file_poll_wait_seconds=30",
            "--max_num_load_retries=2",
            "--load_retry_interval_micros=1000",
            "--enable_batching",
            "--rest_api_timeout_in_ms=5000",
            "--allow_version_labels_for_unavailable_models",
        ]
    )
    assert flags.per_process_gpu_memory_fraction == 0.4
    assert flags.model_config_file_poll_wait_seconds == 30
    assert (flags.max_num_load_retries, flags.load_retry_interval_micros) == (2, 1000)
    assert flags.enable_batching is True
    assert flags.rest_api_timeout_in_ms == 5000
