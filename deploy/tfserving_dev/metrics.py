"""TF Serving's request metrics, exposed in the text format of its Prometheus exporter.

Names, labels and buckets follow tensorflow_serving/servables/tensorflow/util.cc:
  /tensorflow/serving/request_count   counter {model_name, status}
  /tensorflow/serving/request_latency histogram {model_name, API, entrypoint}, microseconds
  /tensorflow/serving/runtime_latency histogram {model_name, API, runtime}, microseconds
with buckets Exponential(scale 10, growth 1.8, 33 buckets) plus +Inf. The exporter turns
'/' into ':' in names. The values live behind a prometheus_client Collector in a private
CollectorRegistry; the page is rendered here rather than by generate_latest() because
prometheus_client renames counters to *_total, which TF Serving does not do.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator

import grpc
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"

# monitoring::Buckets::Exponential(10, 1.8, 33); the last (+Inf) bucket is implicit.
BUCKET_LIMITS: tuple[float, ...] = tuple(10 * 1.8**i for i in range(33))


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKET_LIMITS) + 1)
        self.total = 0.0

    def add(self, value: float) -> None:
        # TensorFlow's Histogram puts a value equal to a limit in the next bucket.
        self.counts[bisect.bisect_right(BUCKET_LIMITS, value)] += 1
        self.total += value


class ServingMetrics:
    """Thread-safe request metrics; also a prometheus_client Collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._request_latency: dict[tuple[str, str, str], _Histogram] = {}
        self._runtime_latency: dict[tuple[str, str, str], _Histogram] = {}

    def record_request(self, model_name: str, code: grpc.StatusCode) -> None:
        """Count one request with its final status (OK, NOT_FOUND, ...)."""
        with self._lock:
            key = (model_name, code.name)
            self._counts[key] = self._counts.get(key, 0) + 1

    def record_request_latency(self, model_name: str, api: str, entrypoint: str, micros: float) -> None:
        """Record the wall time of one successful request."""
        with self._lock:
            hist = self._request_latency.setdefault((model_name, api, entrypoint), _Histogram())
            hist.add(micros)

    def record_runtime_latency(self, model_name: str, api: str, runtime: str, micros: float) -> None:
        """Record the time spent running the model itself."""
        with self._lock:
            hist = self._runtime_latency.setdefault((model_name, api, runtime), _Histogram())
            hist.add(micros)

    def collect(self) -> Iterator[Metric]:
        """prometheus_client Collector protocol."""
        with self._lock:
            counts = dict(self._counts)
            request = {k: (list(h.counts), h.total) for k, h in self._request_latency.items()}
            runtime = {k: (list(h.counts), h.total) for k, h in self._runtime_latency.items()}
        family = Metric(REQUEST_COUNT, "The total number of requests.", "counter")
        for (model, status), value in sorted(counts.items()):
            family.add_sample(REQUEST_COUNT, {"model_name": model, "status": status}, value)
        yield family
        yield _histogram_family(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"),
            request,
        )
        yield _histogram_family(
            RUNTIME_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ("model_name", "API", "runtime"),
            runtime,
        )


def _format_number(value: float) -> str:
    # absl::StrCat(double) prints six significant digits.
    return f"{value:.6g}"


def _histogram_family(
    name: str,
    documentation: str,
    label_names: tuple[str, ...],
    data: dict[tuple[str, str, str], tuple[list[int], float]],
) -> Metric:
    family = Metric(name, documentation, "histogram")
    for key, (counts, total) in sorted(data.items()):
        labels = dict(zip(label_names, key, strict=True))
        cumulative = 0
        for index, count in enumerate(counts):
            cumulative += count
            le = _format_number(BUCKET_LIMITS[index]) if index < len(BUCKET_LIMITS) else "+Inf"
            family.add_sample(f"{name}_bucket", {**labels, "le": le}, cumulative)
        family.add_sample(f"{name}_sum", labels, total)
        family.add_sample(f"{name}_count", labels, cumulative)
    return family


def create_registry(metrics: ServingMetrics) -> CollectorRegistry:
    """A registry of our own, so no process or default-registry metrics leak in."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return registry


def render(registry: CollectorRegistry) -> str:
    """Render the registry the way TF Serving's PrometheusExporter::GeneratePage does."""
    lines: list[str] = []
    for family in registry.collect():
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            labels = ",".join(
                '{}="{}"'.format(k, v.replace("\\", "\\\\").replace('"', '\\"')) for k, v in sample.labels.items()
            )
            if sample.name.endswith("_sum"):
                value = _format_number(sample.value)
            else:
                value = str(int(sample.value))
            lines.append(f"{sample.name}{{{labels}}} {value}")
    return "\n".join(lines) + "\n"
