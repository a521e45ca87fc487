"""What the observability tests share: finding Prometheus' tools, the dashboard's queries."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "serving-stacks.json"
INSTALL_HINT = "run `bash deploy/prometheus/install.sh` (Debian's prometheus package: prometheus and promtool)"

# The gateway's per-replica metric families (issue 15): name -> (type, label names). ``replica`` is the
# replica id (pod name in Kubernetes, container host name in compose), ``stack`` torchserve|tfserving.
# The dashboard's replica rows and the replica rules read these; tests/observability/test_replica_metrics.py
# checks that gateway/metrics.py exports them as declared here and runs every such query on them.
REPLICA_FAMILIES: dict[str, tuple[str, frozenset[str]]] = {
    "gateway_replica_up": ("gauge", frozenset({"stack", "replica"})),
    "gateway_replica_inflight": ("gauge", frozenset({"stack", "replica"})),
    "gateway_replica_request_duration_seconds": ("histogram", frozenset({"stack", "replica"})),
    "gateway_replica_errors": ("counter", frozenset({"stack", "replica"})),
    "gateway_replica_versions_ready": ("gauge", frozenset({"stack", "replica"})),
}


def missing(what: str) -> None:
    """Skip a test that needs ``what``; under CI=true, fail it: CI must run everything."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI=true: this test must run here)", pytrace=False)
    pytest.skip(what)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not on PATH: {INSTALL_HINT}")
    assert path is not None
    return path


@dataclass(frozen=True)
class PanelQuery:
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str

    @property
    def gpu(self) -> bool:
        return "DCGM_" in self.expr

    @property
    def replica(self) -> bool:
        """Reads the per-replica series, which exist only for stacks served by agents' replicas."""
        return "gateway_replica_" in self.expr


def load_dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return result


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included, rows themselves excluded."""
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    return [
        PanelQuery(p["id"], p["title"], t["refId"], t["expr"]) for p in panels(dashboard) for t in p.get("targets", [])
    ]


def substitute(expr: str, variables: dict[str, str], rate_interval: str) -> str:
    """A dashboard expression as Grafana sends it, for the given variable values."""
    expr = expr.replace("$__rate_interval", rate_interval)
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


_PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "stddev", "group",
    "rate", "irate", "increase", "changes", "resets", "delta", "deriv", "histogram_quantile",
    "vector", "scalar", "abs", "clamp_min", "clamp_max", "label_replace", "label_join", "time",
    "max_over_time", "min_over_time", "avg_over_time", "last_over_time", "absent",
    "and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring", "group_left", "group_right",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (a lexer-level reading; enough for our own queries)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, regexes)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    text = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?", " ", text)  # numbers, 1e6 included
    return {t for t in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text) if t not in _PROMQL_WORDS}


def series_names(name: str, kind: str) -> set[str]:
    """The series names a metric family of ``kind`` exposes (histograms' _bucket/_sum/_count, counters' _total)."""
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    if kind == "counter":
        return {f"{name}_total"}
    return {name}


def gateway_metric_names() -> set[str]:
    """Every series name gateway/metrics.py exports (histograms' _bucket/_sum/_count, counters' _total)."""
    from gateway import metrics

    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        names |= series_names(family.name, family.type)
    return names


def replica_metric_names() -> set[str]:
    """Every series name of the per-replica families (REPLICA_FAMILIES)."""
    return {n for name, (kind, _) in REPLICA_FAMILIES.items() for n in series_names(name, kind)}
