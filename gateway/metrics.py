"""Every metric the gateway exports, defined once, here; served at ``GET /metrics``.

Label values are bounded: a model name that is not routable never becomes a label value (such a
request counts under ``model="_unrouted"``), versions are those of the routing table, and
``protocol``, ``backend``, ``code`` and ``error`` come from small fixed sets.

With ``GATEWAY_WORKERS`` above 1 (``gateway/workers.py``) the workers run in prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before any of them starts): each writes its values
to files there, and a scrape of any worker (``scrape_registry``) sums the files, so one scrape counts
every worker's requests exactly once. Each gauge says how its workers' values combine; Info and Enum
metrics are not supported in that mode and the gateway has none (tests/test_workers.py checks both).
``gateway_model_version_info`` is computed at scrape time from the routing table instead of being
stored: every worker follows the registry, and a stored gauge would keep a mapping that was removed.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

#: As prometheus_client decides when it is imported: values in files, summed by the scrape.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

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
INFLIGHT = Gauge(
    "gateway_inflight_requests",
    "Inference requests being served now.",
    ["protocol"],
    registry=REGISTRY,
    multiprocess_mode="livesum",  # every live worker's requests
)
BACKEND_UP = Gauge(
    "gateway_backend_up",
    "1 when the backend answers, 0 when it cannot be reached.",
    ["backend"],
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",  # the latest any live worker saw (probe or call)
)

# Per backend replica (stacks run by agents, GATEWAY_AGENT_STACKS). ``replica`` is the replica id
# the agent registered (the pod name on Kubernetes): bounded by the replicas that exist, and a
# replica's series are removed when it leaves the pool (``gateway.routing.replicas``; with several
# workers the scrape leaves them out, ``ReplicasPresent``). Every name starts with ``gateway_replica_``.
REPLICA_UP = Gauge(
    "gateway_replica_up",
    "1 while the replica is in the gateway's pool with its circuit closed, else 0.",
    ["stack", "replica"],
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)
REPLICA_INFLIGHT = Gauge(
    "gateway_replica_inflight",
    "Calls in flight to the replica now.",
    ["stack", "replica"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
REPLICA_DURATION = Histogram(
    "gateway_replica_request_duration_seconds",
    "Time inside one call to the replica (network and backend).",
    ["stack", "replica"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
REPLICA_ERRORS = Counter(
    "gateway_replica_errors",
    "Calls to the replica that failed: unreachable, timed out, or a backend error.",
    ["stack", "replica"],
    registry=REGISTRY,
)
REPLICA_VERSIONS_READY = Gauge(
    "gateway_replica_versions_ready",
    "Versions the replica reports ready.",
    ["stack", "replica"],
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)
REPLICA_METRICS = (REPLICA_UP, REPLICA_INFLIGHT, REPLICA_DURATION, REPLICA_ERRORS, REPLICA_VERSIONS_READY)
_REPLICA_PREFIX = "gateway_replica_"


class ReplicasPresent:
    """The (stack, replica) pairs in this process's replica pool, set by the pool on every change.

    In multiprocess mode ``remove()`` cannot take a value out of a live worker's file: without this
    the series of a replica that left the pool (scaled down, deregistered, silent) would stay in
    every scrape with their last values, ``gateway_replica_up`` at 1 among them, counted by
    ``stack:gateway_replicas_up:count`` as a replica that serves. The scrape leaves out the replica
    series of pairs not set here (every worker follows the same registry, so their pools agree).
    """

    def __init__(self) -> None:
        self.pairs: frozenset[tuple[str, str]] | None = None  # None: no pool, nothing left out

    def set(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.pairs = frozenset(pairs)


REPLICAS_PRESENT = ReplicasPresent()


class _PresentReplicasOnly(Collector):
    """``inner``'s families, the ``gateway_replica_*`` ones without the replicas no longer present."""

    def __init__(self, inner: Collector, present: ReplicasPresent) -> None:
        self.inner = inner
        self.present = present

    def collect(self) -> Iterator[Metric]:
        pairs = self.present.pairs
        for family in self.inner.collect():
            if pairs is not None and family.name.startswith(_REPLICA_PREFIX):
                family.samples = [s for s in family.samples if (s.labels["stack"], s.labels["replica"]) in pairs]
            yield family


class VersionMappings(Collector):
    """``gateway_model_version_info``: 1 for each mapping ``set`` last gave, computed at scrape time."""

    NAME = "gateway_model_version_info"
    LABELS = ("model", "label", "version", "backend")

    def __init__(self) -> None:
        self._rows: tuple[tuple[str, str, str, str], ...] = ()

    def set(self, rows: Iterable[tuple[str, str, str, str]]) -> None:
        """Replace every mapping at once (one reference swap: a scrape sees the old or the new set)."""
        self._rows = tuple(rows)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            self.NAME,
            "1 for each current label -> version mapping (label 'default' is where unversioned requests go).",
            labels=self.LABELS,
        )
        for row in self._rows:
            family.add_metric(row, 1)
        yield family


MODEL_VERSION_INFO = VersionMappings()
REGISTRY.register(MODEL_VERSION_INFO)
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


def scrape_registry() -> CollectorRegistry:
    """What ``/metrics`` serves: ``REGISTRY``, or with several workers every worker's files summed
    (``MultiProcessCollector``, without the series of replicas that left the pool) plus the version
    mappings this worker follows."""
    if not MULTIPROCESS:
        return REGISTRY
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    files = MultiProcessCollector(None)  # type: ignore[no-untyped-call]
    registry.register(_PresentReplicasOnly(files, REPLICAS_PRESENT))
    registry.register(MODEL_VERSION_INFO)
    return registry


class _ReusePortServer(ThreadingWSGIServer):
    allow_reuse_port = True  # every worker listens; the kernel hands each connection to one of them


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No access log line per scrape."""


def start_server(port: int, host: str, reuse_port: bool) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``scrape_registry()`` on ``host:port`` from a thread of this process; with ``reuse_port``
    several processes (the workers) listen on the port together."""
    if not reuse_port:
        return start_http_server(port, host, scrape_registry())
    _ReusePortServer.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = make_server(host, port, make_wsgi_app(scrape_registry()), _ReusePortServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return server, thread
