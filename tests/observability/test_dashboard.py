"""The Grafana dashboard and provisioning: generated JSON in sync with its builder, and well formed.

tests/e2e/test_observability.py runs every query of the dashboard against a real Prometheus.
"""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType

import pytest
import yaml

from tests.observability.tools import (
    DASHBOARD,
    GRAFANA_DIR,
    gateway_metric_names,
    load_dashboard,
    metric_names,
    missing,
    panel_queries,
    panels,
    replica_metric_names,
)

BACKEND_METRICS = {
    "up",
    "ts_inference_requests_total",
    "ts_inference_latency_microseconds",
    "ts_queue_latency_microseconds",
    ":tensorflow:serving:request_count",
    ":tensorflow:serving:request_latency_bucket",
    ":tensorflow:serving:runtime_latency_bucket",
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
}


def builder() -> ModuleType:
    try:
        import grafana_foundation_sdk  # noqa: F401
    except ImportError:
        missing("grafana-foundation-sdk is not installed (a dev dependency: pip install -e '.[dev]')")
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA_DIR / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return load_dashboard()


def test_the_checked_in_json_is_what_the_builder_builds():
    module = builder()
    assert DASHBOARD == module.OUTPUT
    assert DASHBOARD.read_text() == module.render(), (
        "deploy/grafana/dashboards/serving-stacks.json is stale: run python deploy/grafana/build_dashboard.py"
    )
    assert module.main(["--check"]) == 0


def test_identity(dashboard):
    assert dashboard["uid"] == "serving-stacks"
    assert dashboard["title"] == "Serving stacks side by side"
    assert dashboard["schemaVersion"] >= 39


def test_panels_have_unique_ids_and_titles_a_datasource_and_queries(dashboard):
    datasource = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    ids = [p["id"] for p in dashboard["panels"]] + [p["id"] for r in dashboard["panels"] for p in r.get("panels", [])]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    titles = [p["title"] for p in panels(dashboard)]
    assert len(titles) == len(set(titles))
    for panel in panels(dashboard):
        where = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, where
        assert panel.get("description"), where
        assert panel["fieldConfig"]["defaults"].get("unit"), where
        targets = panel["targets"]
        assert targets, where
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)) and all(refs), where
        for target in targets:
            assert target["datasource"] == {"type": "prometheus", "uid": uid}, where
            assert target["expr"].strip(), where


def test_the_grid_has_no_overlaps(dashboard):
    taken: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_each_stack_view_is_a_pair_side_by_side(dashboard):
    by_title = {p["title"]: p for p in panels(dashboard)}
    pairs = [t.removeprefix("TorchServe: ") for t in by_title if t.startswith("TorchServe: ")]
    gateway_views = [
        "request rate",
        "error ratio",
        "latency p50 / p95 / p99",
        "gateway overhead",
        "latency per version, stable against canary",
    ]
    for view in gateway_views:
        assert view in pairs
        left, right = by_title[f"TorchServe: {view}"], by_title[f"TF Serving: {view}"]
        assert (left["gridPos"]["x"], right["gridPos"]["x"]) == (0, 12)
        assert left["gridPos"]["y"] == right["gridPos"]["y"]
        for a, b in zip(left["targets"], right["targets"], strict=True):
            assert 'backend="torchserve"' in a["expr"] and 'backend="tfserving"' in b["expr"]
            assert a["expr"].replace("torchserve", "tfserving") == b["expr"], view


def replica_rows(dashboard: dict) -> dict[str, list[dict]]:
    """The panels under each row whose title ends in " replicas", by row title (rows are not collapsed:
    a row's panels follow it in the top-level list)."""
    rows: dict[str, list[dict]] = {}
    current: list[dict] | None = None
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            current = rows.setdefault(panel["title"], []) if panel["title"].endswith(" replicas") else None
        elif current is not None:
            current.append(panel)
    return rows


def test_each_stack_has_a_row_of_its_replicas_side_by_side(dashboard):
    rows = replica_rows(dashboard)
    assert list(rows) == ["TorchServe replicas", "TF Serving replicas"]
    views = {
        "up",
        "versions ready",
        "request rate",
        "share of calls",
        "in flight",
        "latency p50 / p99",
        "errors",
    }
    by_stack: dict[str, dict[str, dict]] = {}
    for stack, (title, row) in zip(("torchserve", "tfserving"), rows.items(), strict=True):
        assert {p["title"] for p in row} == {f"{title}: {view}" for view in views}
        by_stack[stack] = {p["title"].removeprefix(f"{title}: "): p for p in row}
        for panel in row:
            where = panel["title"]
            assert panel["targets"], where
            for target in panel["targets"]:
                expr = target["expr"]
                # One stack's replicas, one line or tile per replica: every selector names the stack,
                # every aggregation keeps the replica label and nothing else (le for quantiles).
                assert metric_names(expr) <= replica_metric_names(), where
                selectors = re.findall(r"gateway_replica_\w+\{([^}]*)\}", expr)
                assert selectors and all(s == f'stack="{stack}"' for s in selectors), where
                groupings = re.findall(r"\bby \(([^)]*)\)", expr)
                assert groupings and set(groupings) <= {"replica", "le, replica"}, where
                assert target["legendFormat"].startswith("{{replica}}"), where
    # The same panels, in the same places, for both stacks: only the stack differs.
    for view in views:
        left, right = by_stack["torchserve"][view], by_stack["tfserving"][view]
        assert (left["gridPos"]["x"], left["gridPos"]["w"]) == (right["gridPos"]["x"], right["gridPos"]["w"]), view
        assert left["type"] == right["type"], view
        for a, b in zip(left["targets"], right["targets"], strict=True):
            assert a["expr"].replace('stack="torchserve"', 'stack="tfserving"') == b["expr"], view
    # Panels of one height side by side fill the width.
    for stack, panels_of in by_stack.items():
        rows_of: dict[int, int] = {}
        for panel in panels_of.values():
            rows_of[panel["gridPos"]["y"]] = rows_of.get(panel["gridPos"]["y"], 0) + panel["gridPos"]["w"]
        assert set(rows_of.values()) == {24}, (stack, rows_of)
    # Every per-replica family is on the dashboard.
    exprs = " ".join(t["expr"] for row in rows.values() for p in row for t in p["targets"])
    assert {n for n in replica_metric_names() if n in exprs} == replica_metric_names() - {
        "gateway_replica_request_duration_seconds_sum"
    }


def test_queries_read_only_metrics_that_exist_and_follow_the_variables(dashboard):
    known = gateway_metric_names() | replica_metric_names() | BACKEND_METRICS
    for q in panel_queries(dashboard):
        names = metric_names(q.expr)
        assert names and not names - known, f"{q.panel_title}: unknown metrics {names - known}"
        reads_requests = any(n.startswith(("gateway_request", "gateway_overhead", "gateway_backend_d")) for n in names)
        if reads_requests:
            assert 'model=~"$model"' in q.expr and 'version=~"$version"' in q.expr, q.panel_title
        if any(n.startswith(("gateway_requests_total", "gateway_request_duration")) for n in names):
            assert 'protocol=~"$protocol"' in q.expr, q.panel_title  # the front door filter
        if any(n.startswith(("ts_", ":tensorflow:")) for n in names):
            assert 'model_name=~"$model"' in q.expr, q.panel_title
        # Rate windows come from Grafana, so they follow the scrape interval.
        for window in re.findall(r"\[([^\]]+)\]", q.expr):
            assert window == "$__rate_interval", f"{q.panel_title}: [{window}]"


def test_what_the_issue_asks_for_is_there(dashboard):
    exprs = " ".join(q.expr for q in panel_queries(dashboard))
    for needle in (
        "gateway_requests_total",
        'code=~"5.."',
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "gateway_overhead_seconds_bucket",
        'gateway_model_version_info{label=~"stable|canary"',
        "gateway_shadow_requests_total",
        "rate(ts_queue_latency_microseconds",
        "rate(ts_inference_latency_microseconds",
        "rate(:tensorflow:serving:request_latency_bucket",
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
    ):
        assert needle in exprs, needle
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"model", "version", "protocol"}
    for name, var in variables.items():
        assert var["type"] == "query" and var["multi"] and var["includeAll"]
        assert var["query"].startswith("label_values(gateway_") and var["query"].endswith(f", {name})")
    (annotation,) = dashboard["annotations"]["list"]
    assert "gateway_rollout_events_total" in annotation["expr"] and annotation["enable"]
    assert annotation["datasource"]["uid"] == "prometheus"


def test_provisioning():
    ds = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert (source["type"], source["uid"], source["url"]) == ("prometheus", "prometheus", "http://prometheus:9090")
    assert source["isDefault"] is True
    boards = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    (provider,) = boards["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"
