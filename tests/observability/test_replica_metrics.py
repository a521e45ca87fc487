"""The per-replica series (issue 15): what the gateway exports, and the dashboard's replica rows and
the replica rules run by a real Prometheus on such series.

The local stack of tests/e2e/test_observability.py runs no agents, so it has no per-replica series.
Here two exporters stand for two gateway replicas: each exposes the per-replica families with the
names, types, labels and buckets of ``REPLICA_FAMILIES`` (the gateway's), with known values, and a
Prometheus runs the project's own prometheus.yml with both as targets of its ``gateway`` job (only
the targets and the intervals replaced). Every query of the replica rows and every rule reading
those series then runs through Prometheus' HTTP API, and the answers are checked value by value.
Needs ``prometheus`` (deploy/prometheus/install.sh): skipped without it, failed under CI=true.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

from tests.observability.promserver import Prometheus, free_port, local_config
from tests.observability.tools import (
    PROMETHEUS_DIR,
    REPLICA_FAMILIES,
    load_dashboard,
    panel_queries,
    require_tool,
    substitute,
)

INTERVAL = "1s"
RATE_INTERVAL = "15s"
STACK_OF = {"ts-0": "torchserve", "ts-1": "torchserve", "tf-0": "tfserving", "tf-1": "tfserving"}


@dataclass
class GatewayView:
    """One gateway replica's view of the backend replicas: up, in flight, versions ready, and the
    calls it makes each tick (replica -> (duration in seconds, every how many calls one fails))."""

    up: dict[str, int]
    inflight: dict[str, int]
    ready: dict[str, int]
    calls: dict[str, tuple[float, int]] = field(default_factory=dict)


# g1 has ts-1's circuit open, neither routes to tf-1 (registered, circuit open on both): the
# dashboard shows ts-1 down (lowest over gateways), the rules see tf-1 down and tfserving at one replica.
VIEWS = {
    "g0": GatewayView(
        up={"ts-0": 1, "ts-1": 1, "tf-0": 1, "tf-1": 0},
        inflight={"ts-0": 2, "ts-1": 1, "tf-0": 4, "tf-1": 0},
        ready={"ts-0": 3, "ts-1": 3, "tf-0": 2, "tf-1": 2},
        calls={"ts-0": (0.004, 0), "ts-1": (0.04, 4), "tf-0": (0.009, 0)},
    ),
    "g1": GatewayView(
        up={"ts-0": 1, "ts-1": 0, "tf-0": 1, "tf-1": 0},
        inflight={"ts-0": 3, "ts-1": 0, "tf-0": 1, "tf-1": 0},
        ready={"ts-0": 3, "ts-1": 3, "tf-0": 2, "tf-1": 2},
        calls={"ts-0": (0.004, 0), "tf-0": (0.009, 0)},
    ),
}


def _gateway_families() -> dict[str, MetricWrapperBase]:
    from gateway import metrics

    return {m._name: m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}


def test_the_gateway_exports_the_per_replica_families():
    from gateway import metrics

    exported = _gateway_families()
    for name, (kind, labels) in REPLICA_FAMILIES.items():
        assert name in exported, f"gateway/metrics.py has no {name}"
        metric = exported[name]
        assert metric._type == kind, (name, metric._type)
        assert set(metric._labelnames) == labels, (name, metric._labelnames)
        if kind == "histogram":  # the buckets of the backend-call histogram
            assert metric._upper_bounds == metrics.BACKEND_DURATION._upper_bounds, name  # type: ignore[attr-defined]


class Exporter:
    """One gateway replica's per-replica series on a port of its own, with calls made every tick."""

    def __init__(self, view: GatewayView) -> None:
        self.view = view
        self.registry = CollectorRegistry()
        self.port = free_port()
        families: dict[str, Any] = {}
        for name, (kind, labels) in REPLICA_FAMILIES.items():
            cls = {"gauge": Gauge, "counter": Counter, "histogram": Histogram}[kind]
            extra = {"buckets": _latency_buckets()} if kind == "histogram" else {}
            families[name] = cls(name, name, sorted(labels), registry=self.registry, **extra)
        self.families = families
        for replica in STACK_OF:
            self._family("gateway_replica_up", replica).set(view.up[replica])
            self._family("gateway_replica_inflight", replica).set(view.inflight[replica])
            self._family("gateway_replica_versions_ready", replica).set(view.ready[replica])
        self.calls = 0
        self.stop = threading.Event()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self.ticker = threading.Thread(target=self._tick, daemon=True)
        self.ticker.start()

    def _family(self, name: str, replica: str) -> Any:
        return self.families[name].labels(stack=STACK_OF[replica], replica=replica)

    def _tick(self) -> None:
        while not self.stop.wait(0.05):
            self.calls += 1
            for replica, (seconds, fail_every) in self.view.calls.items():
                self._family("gateway_replica_request_duration_seconds", replica).observe(seconds)
                if fail_every and self.calls % fail_every == 0:
                    self._family("gateway_replica_errors", replica).inc()

    def close(self) -> None:
        self.stop.set()
        self.ticker.join(timeout=5)
        self.server.shutdown()
        self.server.server_close()


def _latency_buckets() -> tuple[float, ...]:
    from gateway import metrics

    return metrics.LATENCY_BUCKETS


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> Iterator[Prometheus]:
    binary = require_tool("prometheus")
    exporters = [Exporter(view) for view in VIEWS.values()]
    dead = [f"127.0.0.1:{free_port()}" for _ in range(3)]  # no backends, no GPU exporter: nobody listens
    targets: dict[str, str | list[str]] = {
        "gateway:8001": [f"127.0.0.1:{e.port}" for e in exporters],
        "torchserve:8082": dead[0],
        "tfserving:8501": dead[1],
        "dcgm-exporter:9400": dead[2],
    }
    text = local_config((PROMETHEUS_DIR / "prometheus.yml").read_text(), targets, INTERVAL)
    server = Prometheus(binary, tmp_path_factory.mktemp("prometheus-replicas"), text)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        for exporter in exporters:
            exporter.close()


def _vector(prom: Prometheus, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
    """An instant query's answer: labels but the name (sorted pairs) -> value; asserts it is a valid vector."""
    body = prom.query(expr)
    assert body.get("status") == "success", f"{expr}: {body}"
    assert body["data"]["resultType"] == "vector", expr
    return {
        tuple(sorted((k, v) for k, v in s["metric"].items() if k != "__name__")): float(s["value"][1])
        for s in body["data"]["result"]
    }


def _by_replica(prom: Prometheus, expr: str) -> dict[str, float]:
    found = _vector(prom, expr)
    for labels in found:
        assert [k for k, _ in labels] == ["replica"], f"{expr}: {labels}"  # one series per replica, no more
    return {dict(labels)["replica"]: value for labels, value in found.items()}


@pytest.fixture(scope="module")
def scraped(prometheus) -> Prometheus:
    """Both gateways scraped long enough for a rate over RATE_INTERVAL, the rules evaluated."""
    prom = prometheus
    prom.wait_for(
        "both gateway exporters scraped",
        lambda: (
            sum(t["health"] == "up" for t in prom.api("targets")["activeTargets"] if t["labels"]["job"] == "gateway")
            == 2
        ),
    )
    prom.wait_for(
        "calls counted in rates",
        lambda: len(_vector(prom, "rate(gateway_replica_request_duration_seconds_count[15s])")) == 5,
    )
    prom.wait_for("the replica count recorded", lambda: len(_vector(prom, "stack:gateway_replicas_up:count")) == 2)
    return prom


def _replica_queries() -> dict[str, dict[str, str]]:
    """Each replica panel's queries by its title (``{name} replicas: {view}``): ref id -> expr."""
    found: dict[str, dict[str, str]] = {}
    for q in panel_queries(load_dashboard()):
        if q.replica:
            found.setdefault(q.panel_title, {})[q.ref_id] = substitute(q.expr, {}, RATE_INTERVAL)
    return found


def test_every_replica_panel_shows_its_own_stacks_replicas_with_the_values_exported(scraped):
    prom = scraped
    queries = _replica_queries()
    assert len(queries) == 14  # 7 views x 2 stacks
    for stack, name in (("torchserve", "TorchServe"), ("tfserving", "TF Serving")):
        mine = {r for r, s in STACK_OF.items() if s == stack}
        routed = {r for view in VIEWS.values() for r in view.calls if STACK_OF[r] == stack}

        def panel(view: str, ref: str = "A", _name: str = name) -> dict[str, float]:
            return _by_replica(prom, queries[f"{_name} replicas: {view}"][ref])

        # Gauges: exactly what the gateways export, combined over the two gateways.
        assert panel("up") == {r: min(v.up[r] for v in VIEWS.values()) for r in mine}
        assert panel("versions ready") == {r: max(v.ready[r] for v in VIEWS.values()) for r in mine}
        assert panel("in flight") == {r: sum(v.inflight[r] for v in VIEWS.values()) for r in mine}
        # Calls: one line per replica some gateway routes to, only this stack's.
        rate = panel("request rate")
        assert set(rate) == routed and all(v > 0 for v in rate.values()), rate
        share = panel("share of calls")
        assert set(share) == routed and sum(share.values()) == pytest.approx(1.0, abs=1e-6), share
        for ref in ("A", "B"):  # p50, p99
            latency = panel("latency p50 / p99", ref)
            assert set(latency) == routed, latency
            for replica, value in latency.items():
                seconds = VIEWS["g0"].calls[replica][0]
                assert seconds * 0.5 < value <= seconds * 1.5, (replica, value)  # within its bucket
        errors = panel("errors")
        assert set(errors) == routed, errors  # 0, not absent, for a replica with calls and no error
        for replica, value in errors.items():
            failing = any(v.calls.get(replica, (0, 0))[1] for v in VIEWS.values())
            assert (value > 0) == failing, (replica, value)
    # ts-0 gets the calls of both gateways, ts-1 those of g0 only.
    share = _by_replica(prom, queries["TorchServe replicas: share of calls"]["A"])
    assert share["ts-0"] == pytest.approx(2 / 3, abs=0.1) and share["ts-1"] == pytest.approx(1 / 3, abs=0.1)


def test_the_replica_rules_run_on_the_per_replica_series(scraped):
    prom = scraped
    loaded = {r["name"]: r for g in prom.api("rules")["groups"] for r in g["rules"]}
    for name in ("stack:gateway_replicas_up:count", "ServingReplicaDown", "ServingStackBelowTwoReplicas",
                 "ServingStackNoReplicaUp"):  # fmt: skip
        assert loaded[name]["health"] == "ok", loaded[name]
    # ts-1 is up for g0: two TorchServe replicas up; tf-1 is up for neither: one TF Serving replica.
    assert _vector(prom, "stack:gateway_replicas_up:count") == {
        (("stack", "tfserving"),): 1.0,
        (("stack", "torchserve"),): 2.0,
    }
    # The alerts' expressions (their `for` is minutes: the answers are what would go pending).
    assert _vector(prom, loaded["ServingReplicaDown"]["query"]) == {(("replica", "tf-1"), ("stack", "tfserving")): 0.0}
    assert _vector(prom, loaded["ServingStackBelowTwoReplicas"]["query"]) == {(("stack", "tfserving"),): 1.0}
    assert _vector(prom, loaded["ServingStackNoReplicaUp"]["query"]) == {}
    expected = {("ServingReplicaDown", "tf-1"), ("ServingStackBelowTwoReplicas", "tfserving")}

    def pending() -> set[tuple[str, str | None]]:
        return {
            (a["labels"]["alertname"], a["labels"].get("replica") or a["labels"].get("stack"))
            for a in prom.api("alerts")["alerts"]
        }

    # An alert over the recorded count goes pending at the first evaluation after the count has a
    # value: one evaluation interval after it (1 s here), which a single look could miss.
    prom.wait_for(f"alerts {expected} pending", lambda: expected <= pending(), timeout=15)
