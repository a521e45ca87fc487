"""Every metric the gateway exports, defined once, here; served at ``GET /metrics``.

Label values are bounded: a model name that is not routable never becomes a label value (such a
request counts under ``model="_unrouted"``), versions are those of the routing table, and
``protocol``, ``backend``, ``code`` and ``error`` come from small fixed sets.

The gateway runs one process per container (``gateway serve``); scale with replicas, each scraped
on its own, so the counters need no multiprocess mode.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

#: Fine enough to resolve sub-millisecond gateway overhead, wide enough for multi-second tails.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075,
    0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
DIFF_BUCKETS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.25, 0.5, 1.0)

UNROUTED = "_unrouted"

REQUEST_DURATION = Histogram(
    "gateway_request_duration_seconds",
    "Inference request duration in the gateway, from the first byte read to the response.",
    ["model", "version", "label", "backend", "protocol", "code"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
BACKEND_DURATION = Histogram(
    "gateway_backend_duration_seconds",
    "Time inside the backend call (network and backend).",
    ["backend", "model", "version"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
OVERHEAD = Histogram(
    "gateway_overhead_seconds",
    "Request duration minus backend time: what the gateway itself adds.",
    ["backend", "model", "version"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
REQUESTS = Counter(
    "gateway_requests",
    "Inference requests answered, by outcome.",
    ["model", "version", "backend", "protocol", "code"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "gateway_errors",
    "Inference requests answered with an error, by error class.",
    ["model", "backend", "protocol", "error"],
    registry=REGISTRY,
)
INFLIGHT = Gauge("gateway_inflight_requests", "Inference requests being served now.", ["protocol"], registry=REGISTRY)
BACKEND_UP = Gauge(
    "gateway_backend_up", "1 when the backend answers, 0 when it cannot be reached.", ["backend"], registry=REGISTRY
)
MODEL_VERSION_INFO = Gauge(
    "gateway_model_version_info",
    "1 for each current label -> version mapping (label 'default' is where unversioned requests go).",
    ["model", "label", "version", "backend"],
    registry=REGISTRY,
)
ROLLOUT_EVENTS = Counter(
    "gateway_rollout_events", "Rollout operations done, by model and action.", ["model", "action"], registry=REGISTRY
)
SHADOW_REQUESTS = Counter(
    "gateway_shadow_requests",
    "Shadow copies by outcome: agree, disagree, error, dropped.",
    ["model", "primary_version", "shadow_version", "outcome"],
    registry=REGISTRY,
)
SHADOW_ABS_DIFF = Histogram(
    "gateway_shadow_abs_diff",
    "Max absolute difference between the answer returned and the shadow version's.",
    ["model", "primary_version", "shadow_version"],
    buckets=DIFF_BUCKETS,
    registry=REGISTRY,
)
