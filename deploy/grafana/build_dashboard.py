"""Builds the Grafana dashboard "Serving stacks side by side" from code.

    python deploy/grafana/build_dashboard.py          # (re)writes dashboards/serving-stacks.json
    python deploy/grafana/build_dashboard.py --check  # exits 1 when the JSON is not what this builds

Built with Grafana's own grafana-foundation-sdk (its Python builders; a dev dependency only), pinned
in pyproject.toml to its build for Grafana 11.4, the version docker-compose.yml runs (newer Grafanas
migrate the dashboard's schema on load). The generated JSON is checked in, because Grafana's file
provisioning and the Kubernetes kustomization read it; tests/observability checks that it matches
this builder, and tests/e2e/test_observability.py runs every query of it against a real Prometheus
scraping the real local stack.

Layout: each gateway view is a pair of panels, TorchServe on the left and TF Serving on the right,
with the same queries but for ``backend``. Comparisons between versions (canary against stable,
shadows) are single panels across both stacks, since the two versions may live on different stacks.
A row per stack shows that stack's replicas side by side (issue 15: replicas converged by agents),
from the gateway's per-replica series; each of those queries selects one stack and keeps the
``replica`` label alone, so a panel has one line per replica of its stack and no more.
Every metric name and label here is one that gateway/metrics.py, TorchServe, TF Serving or the DCGM
exporter really exports.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "dashboards" / "serving-stacks.json"

UID = "serving-stacks"
TITLE = "Serving stacks side by side"
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="prometheus")
STACKS = (("torchserve", "TorchServe"), ("tfserving", "TF Serving"))

# Filters every gateway query shares; $model and $version are the dashboard's variables.
MV = 'model=~"$model", version=~"$version"'
# The front door ($protocol: tfserving_rest, oip, torchserve, tfserving_grpc, oip_grpc), on the metrics
# that carry it (requests and their duration; the overhead and backend-call histograms do not).
PROTO = 'protocol=~"$protocol"'
RATE = "[$__rate_interval]"


class PrometheusAnnotation(models.AnnotationQuery):
    """The SDK's annotation model plus the Prometheus data source's own fields (title, text, tags, step)."""

    def __init__(self, title_format: str, text_format: str, tag_keys: str, step: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.title_format, self.text_format, self.tag_keys, self.step = title_format, text_format, tag_keys, step

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        payload.update(titleFormat=self.title_format, textFormat=self.text_format, tagKeys=self.tag_keys)
        payload["step"] = self.step
        return payload


class PrometheusAnnotationBuilder(db.AnnotationQuery):
    def __init__(self, title_format: str, text_format: str, tag_keys: str, step: str) -> None:
        self._internal = PrometheusAnnotation(title_format, text_format, tag_keys, step)


def query(expr: str, legend: str, ref: str) -> prom.Dataquery:
    return prom.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE).range()


def series(
    title: str,
    description: str,
    unit: str,
    targets: list[tuple[str, str]],
    *,
    width: int = 12,
    height: int = 8,
    max_value: float | None = None,
) -> timeseries.Panel:
    """A time series panel; ``targets`` are (PromQL, legend) pairs."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .span(width)
        .height(height)
        .fill_opacity(8)
        .line_width(1)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(
            common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)
        )
    )
    if max_value is not None:
        panel = panel.max(max_value)
    for ref, (expr, legend) in zip("ABCDEFGH", targets, strict=False):
        panel = panel.with_target(query(expr, legend, ref))
    return panel


def up_stat(
    title: str, description: str, targets: list[tuple[str, str]], unit: str = "none", *, width: int = 6
) -> stat.Panel:
    """A stat panel, red below 1 and green from 1: one tile per series (legend as its name)."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(4)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(
            db.ThresholdsConfig()
            .mode(models.ThresholdsMode.ABSOLUTE)
            .steps([models.Threshold(value=None, color="red"), models.Threshold(value=1, color="green")])
        )
    )
    for ref, (expr, legend) in zip("ABCD", targets, strict=False):
        panel = panel.with_target(query(expr, legend, ref))
    return panel


def quantile(q: float, metric: str, selector: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{selector}}}{RATE})))"


def error_ratio(selector: str, codes: str, by: str) -> str:
    """Share of requests answered with ``codes``; 0, not absent, while there is traffic and no such error."""
    every = f"sum by ({by}) (rate(gateway_requests_total{{{selector}}}{RATE}))"
    failed = f'sum by ({by}) (rate(gateway_requests_total{{{selector}, code=~"{codes}"}}{RATE}))'
    return f"({failed} or {every} * 0) / {every}"


def labelled(expr: str, extra_selector: str = "", copy: str = "label") -> str:
    """``expr`` (by model, version) for versions that the stable or canary label points at, with that label."""
    info = f'gateway_model_version_info{{label=~"stable|canary", model=~"$model"{extra_selector}}}'
    # topk keeps one mapping per version (one per gateway replica otherwise), so the join is one-to-one.
    return f"{expr} * on (model, version) group_left ({copy}) topk by (model, version) (1, {info})"


def stack_pairs() -> list[tuple[str, list[Any]]]:
    """Rows of (TorchServe panel, TF Serving panel) pairs, built from one function per view."""
    rows: list[tuple[str, list[Any]]] = []

    def pair(make: Any) -> list[Any]:
        return [make(backend, name) for backend, name in STACKS]

    def request_rate(backend: str, name: str) -> Any:
        sel = f'backend="{backend}", {MV}, {PROTO}'
        return series(
            f"{name}: request rate",
            f"Inference requests the gateway answered from {name}, per model and version (gateway_requests_total).",
            "reqps",
            [(f"sum by (model, version) (rate(gateway_requests_total{{{sel}}}{RATE}))", "{{model}} v{{version}}")],
        )

    def errors(backend: str, name: str) -> Any:
        sel = f'backend="{backend}", {MV}, {PROTO}'
        return series(
            f"{name}: error ratio",
            "Share of requests answered with a server error (5xx: backend error, unreachable, deadline) and "
            "with a client error (4xx: bad body, too large). Requests for unknown models count under "
            "model _unrouted, in no stack.",
            "percentunit",
            [
                (error_ratio(sel, "5..", "model, version"), "{{model}} v{{version}} 5xx"),
                (error_ratio(sel, "4..", "model, version"), "{{model}} v{{version}} 4xx"),
            ],
            max_value=1,
        )

    def latency(backend: str, name: str) -> Any:
        sel = f'backend="{backend}", {MV}, {PROTO}'
        metric = "gateway_request_duration_seconds"
        return series(
            f"{name}: latency p50 / p95 / p99",
            "Request duration in the gateway, first byte read to response, per model (all selected versions).",
            "s",
            [(quantile(q, metric, sel, "model"), f"{{{{model}}}} p{round(q * 100)}") for q in (0.5, 0.95, 0.99)],
        )

    def overhead(backend: str, name: str) -> Any:
        sel = f'backend="{backend}", {MV}'
        metric = "gateway_overhead_seconds"
        mean = (
            f"sum by (model) (rate({metric}_sum{{{sel}}}{RATE})) / sum by (model) (rate({metric}_count{{{sel}}}{RATE}))"
        )
        return series(
            f"{name}: gateway overhead",
            "What the gateway itself adds to a request: its duration minus the backend call "
            "(gateway_overhead_seconds).",
            "s",
            [
                (quantile(0.5, metric, sel, "model"), "{{model}} p50"),
                (quantile(0.99, metric, sel, "model"), "{{model}} p99"),
                (mean, "{{model}} mean"),
            ],
        )

    def backend_call(backend: str, name: str) -> Any:
        sel = f'backend="{backend}", {MV}'
        metric = "gateway_backend_duration_seconds"
        return series(
            f"{name}: backend call time (gateway's view)",
            f"Time inside the call to {name}, network included (gateway_backend_duration_seconds); compare with "
            f"{name}'s own numbers below.",
            "s",
            [
                (quantile(0.5, metric, sel, "model, version"), "{{model}} v{{version}} p50"),
                (quantile(0.99, metric, sel, "model, version"), "{{model}} v{{version}} p99"),
            ],
        )

    def per_version(backend: str, name: str) -> Any:
        sel = f'backend="{backend}", {MV}, {PROTO}'
        metric = "gateway_request_duration_seconds"
        extra = f', backend="{backend}"'
        return series(
            f"{name}: latency per version, stable against canary",
            "p50 and p99 of each version that the stable or canary label points at "
            "(gateway_model_version_info), named by its label.",
            "s",
            [
                (labelled(quantile(0.5, metric, sel, "model, version"), extra), "{{model}} {{label}} v{{version}} p50"),
                (
                    labelled(quantile(0.99, metric, sel, "model, version"), extra),
                    "{{model}} {{label}} v{{version}} p99",
                ),
            ],
        )

    rows.append(("Traffic and errors", pair(request_rate) + pair(errors)))
    rows.append(("Latency", pair(latency) + pair(overhead) + pair(backend_call) + pair(per_version)))
    return rows


def replica_rows() -> list[tuple[str, list[Any]]]:
    """One row per stack: its replicas side by side (one tile or line per ``replica``), from the
    gateway's per-replica metrics. Every query selects one stack and groups by ``replica`` alone."""
    metric = "gateway_replica_request_duration_seconds"

    def row(backend: str, name: str) -> tuple[str, list[Any]]:
        sel = f'stack="{backend}"'
        calls = f"sum by (replica) (rate({metric}_count{{{sel}}}{RATE}))"
        errors = f"sum by (replica) (rate(gateway_replica_errors_total{{{sel}}}{RATE}))"
        title = f"{name} replicas"
        panels = [
            up_stat(
                f"{title}: up",
                f"Each {name} replica the gateway routes to: 1 (green) while it is in the pool with its circuit "
                "closed, 0 (red) when at least one gateway replica has its circuit open "
                "(gateway_replica_up, the lowest over gateway replicas). A replica whose heartbeat lapsed "
                "(GATEWAY_REPLICA_TTL_SECONDS) leaves the pool and this panel.",
                [(f"min by (replica) (gateway_replica_up{{{sel}}})", "{{replica}}")],
                width=12,
            ),
            up_stat(
                f"{title}: versions ready",
                f"How many versions each {name} replica reports ready (gateway_replica_versions_ready); "
                "replicas of one stack hold the same versions once converged.",
                [(f"max by (replica) (gateway_replica_versions_ready{{{sel}}})", "{{replica}}")],
                width=12,
            ),
            series(
                f"{title}: request rate",
                f"Calls the gateway sent to each {name} replica per second, all gateway replicas ({metric}_count).",
                "reqps",
                [(calls, "{{replica}}")],
                width=8,
            ),
            series(
                f"{title}: share of calls",
                f"Each replica's share of the calls to {name}: equal replicas should stay near an equal split.",
                "percentunit",
                [
                    (
                        f"{calls} / ignoring (replica) group_left () sum (rate({metric}_count{{{sel}}}{RATE}))",
                        "{{replica}}",
                    )
                ],
                width=8,
                max_value=1,
            ),
            series(
                f"{title}: in flight",
                f"Calls in flight to each {name} replica now, all gateway replicas (gateway_replica_inflight).",
                "none",
                [(f"sum by (replica) (gateway_replica_inflight{{{sel}}})", "{{replica}}")],
                width=8,
            ),
            series(
                f"{title}: latency p50 / p99",
                f"Duration of the gateway's calls to each {name} replica ({metric}).",
                "s",
                [(quantile(q, metric, sel, "replica"), f"{{{{replica}}}} p{round(q * 100)}") for q in (0.5, 0.99)],
            ),
            series(
                f"{title}: errors",
                f"Calls to each {name} replica that failed per second: unreachable, timed out or answered 5xx "
                "(gateway_replica_errors_total); 0, not absent, while a replica has calls and no error.",
                "reqps",
                [(f"{errors} or {calls} * 0", "{{replica}}")],
            ),
        ]
        return title, panels

    return [row(backend, name) for backend, name in STACKS]


def rollout_panels() -> list[Any]:
    sel = f'backend!="", model=~"$model", version=~"$version", {PROTO}'
    p99 = quantile(0.99, "gateway_request_duration_seconds", sel, "model, version")
    shadow = 'model=~"$model"'
    compared = (
        "sum by (model, primary_version, shadow_version) "
        f'(rate(gateway_shadow_requests_total{{{shadow}, outcome=~"agree|disagree"}}{RATE}))'
    )
    agreed = (
        "sum by (model, primary_version, shadow_version) "
        f'(rate(gateway_shadow_requests_total{{{shadow}, outcome="agree"}}{RATE}))'
    )
    return [
        series(
            "Canary against stable: p99 (both stacks)",
            "p99 of the stable and the canary version of each model, wherever each is served. "
            "The alert CanaryLatencyWorseThanStable fires when the canary's is above 1.5 x stable + 10 ms.",
            "s",
            [(labelled(p99, copy="label, backend"), "{{model}} {{label}} v{{version}} ({{backend}})")],
        ),
        series(
            "Canary against stable: 5xx ratio (both stacks)",
            "Share of server errors of the stable and the canary version of each model.",
            "percentunit",
            [
                (
                    labelled(error_ratio(sel, "5..", "model, version"), copy="label, backend"),
                    "{{model}} {{label}} v{{version}} ({{backend}})",
                )
            ],
            max_value=1,
        ),
        series(
            "Shadow agreement",
            "Of the shadow copies compared, the share whose answer agreed with the one returned "
            "(gateway_shadow_requests_total, outcome agree / (agree + disagree)).",
            "percentunit",
            [(f"({agreed} or {compared} * 0) / {compared}", "{{model}} v{{primary_version}} → v{{shadow_version}}")],
            max_value=1,
            width=8,
        ),
        series(
            "Shadow copies by outcome",
            "Shadow copies per second: agree, disagree, error (the shadow failed), dropped (too many in flight).",
            "reqps",
            [
                (
                    f"sum by (model, shadow_version, outcome) (rate(gateway_shadow_requests_total{{{shadow}}}{RATE}))",
                    "{{model}} v{{shadow_version}} {{outcome}}",
                )
            ],
            width=8,
        ),
        series(
            "Shadow answers: largest difference (p99)",
            "p99 of the largest absolute difference between the answer returned and the shadow version's, "
            "per compared copy (gateway_shadow_abs_diff).",
            "none",
            [
                (
                    quantile(0.99, "gateway_shadow_abs_diff", shadow, "model, primary_version, shadow_version"),
                    "{{model}} v{{primary_version}} → v{{shadow_version}}",
                )
            ],
            width=8,
        ),
    ]


def backend_own_panels() -> list[Any]:
    ts = 'model_name=~"$model", model_version=~"$version"'
    tf = 'model_name=~"$model"'

    def per_request(counter: str) -> str:
        return (
            f"sum by (model_name, model_version) (rate({counter}{{{ts}}}{RATE})) / "
            f"sum by (model_name, model_version) (rate(ts_inference_requests_total{{{ts}}}{RATE})) / 1e6"
        )

    def tf_quantile(q: float, metric: str) -> str:
        return f"{quantile(q, metric, tf, 'model_name')} / 1e6"

    return [
        series(
            "TorchServe: queue and inference time per request (its own metrics)",
            "TorchServe's counters of microseconds divided by its request count: ts_queue_latency_microseconds "
            "(waiting for a worker) and ts_inference_latency_microseconds (the whole request in TorchServe).",
            "s",
            [
                (per_request("ts_queue_latency_microseconds"), "{{model_name}} v{{model_version}} queue"),
                (per_request("ts_inference_latency_microseconds"), "{{model_name}} v{{model_version}} inference"),
            ],
        ),
        series(
            "TF Serving: request latency (its own metrics)",
            "TF Serving's :tensorflow:serving:request_latency histogram (µs; the whole request) and "
            ":tensorflow:serving:runtime_latency (the model run). TF Serving labels these by model only; "
            "the version filter does not apply.",
            "s",
            [
                (tf_quantile(0.5, ":tensorflow:serving:request_latency"), "{{model_name}} request p50"),
                (tf_quantile(0.99, ":tensorflow:serving:request_latency"), "{{model_name}} request p99"),
                (tf_quantile(0.99, ":tensorflow:serving:runtime_latency"), "{{model_name}} runtime p99"),
            ],
        ),
        series(
            "TorchServe: requests it served",
            "ts_inference_requests_total: requests TorchServe answered, per model and version.",
            "reqps",
            [
                (
                    f"sum by (model_name, model_version) (rate(ts_inference_requests_total{{{ts}}}{RATE}))",
                    "{{model_name}} v{{model_version}}",
                )
            ],
        ),
        series(
            "TF Serving: requests by status",
            ":tensorflow:serving:request_count: requests TF Serving answered, per model and status (OK, ...).",
            "reqps",
            [
                (
                    f"sum by (model_name, status) (rate(:tensorflow:serving:request_count{{{tf}}}{RATE}))",
                    "{{model_name}} {{status}}",
                )
            ],
        ),
    ]


def gpu_panels() -> list[Any]:
    by = "gpu, Hostname, container"
    legend = "GPU {{gpu}} {{Hostname}} {{container}}"
    return [
        series(
            "GPU utilisation",
            "DCGM_FI_DEV_GPU_UTIL from the NVIDIA DCGM exporter (job dcgm). On Kubernetes with pod mapping "
            "the container label names the stack using the GPU. Empty without GPUs.",
            "percent",
            [(f"avg by ({by}) (DCGM_FI_DEV_GPU_UTIL)", legend)],
            max_value=100,
        ),
        series(
            "GPU memory used",
            "Frame buffer used (DCGM_FI_DEV_FB_USED, MiB) and its share of used + free (DCGM_FI_DEV_FB_FREE).",
            "mbytes",
            [
                (f"sum by ({by}) (DCGM_FI_DEV_FB_USED)", legend + " used"),
                (
                    f"sum by ({by}) (DCGM_FI_DEV_FB_USED) / "
                    f"(sum by ({by}) (DCGM_FI_DEV_FB_USED) + sum by ({by}) (DCGM_FI_DEV_FB_FREE)) * 100",
                    legend + " used %",
                ),
            ],
        ),
    ]


def overview_panels() -> list[Any]:
    panels = [
        up_stat(
            f"{name} up",
            f"Whether Prometheus scrapes {name} (up) and whether the gateway reaches it (gateway_backend_up).",
            [
                (f'min(up{{job="{backend}"}})', "scrape"),
                (f'min(gateway_backend_up{{backend="{backend}"}})', "gateway"),
            ],
        )
        for backend, name in STACKS
    ]
    panels.append(
        up_stat(
            "Gateway replicas up",
            "Gateway processes that answer Prometheus' scrape.",
            [('sum(up{job="gateway"})', "")],
        )
    )
    panels.append(
        up_stat(
            "Requests in flight",
            "Inference requests being served now, all gateway replicas (gateway_inflight_requests).",
            [("sum(gateway_inflight_requests)", "")],
        )
    )
    return panels


def _multi_variable(name: str, label: str, description: str, query: str, sort: Any) -> Any:
    """A template variable over a label's values, refreshed with the time range: several may be
    chosen, and "All" (the default) matches any value."""
    return (
        db.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(sort)
        .multi(True)
        .include_all(True)
        .all_value(".+")
        .current(models.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def build() -> dict[str, Any]:
    """The dashboard as the JSON object Grafana reads."""
    model_var = _multi_variable(
        "model",
        "Model",
        "Models the gateway routes (gateway_model_version_info).",
        "label_values(gateway_model_version_info, model)",
        models.VariableSort.ALPHABETICAL_ASC,
    )
    version_var = _multi_variable(
        "version",
        "Version",
        "Versions of the selected models that served requests (gateway_requests_total).",
        'label_values(gateway_requests_total{model=~"$model", backend!=""}, version)',
        models.VariableSort.NUMERICAL_ASC,
    )
    protocol_var = _multi_variable(
        "protocol",
        "Protocol",
        "Front doors (gateway_requests_total): tfserving_rest, oip, torchserve, tfserving_grpc, oip_grpc. "
        "Filters the request rate, error and latency panels; overhead and backend-call time have no "
        "protocol label.",
        'label_values(gateway_requests_total{model=~"$model"}, protocol)',
        models.VariableSort.ALPHABETICAL_ASC,
    )
    # A rollout operation shows as a marker: a counter that moved within the last minute, or a
    # (model, action) counted for the first time (a new series has no earlier sample to change from).
    rollouts = (
        PrometheusAnnotationBuilder(
            title_format="{{action}}", text_format="{{model}}: {{action}}", tag_keys="model,action", step="15s"
        )
        .name("Rollout events")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("orange")
        .expr(
            "sum by (model, action) (changes(gateway_rollout_events_total[1m])) > 0 "
            "or sum by (model, action) (gateway_rollout_events_total unless gateway_rollout_events_total offset 1m)"
        )
    )
    builder = (
        db.Dashboard(TITLE)
        .uid(UID)
        .description(
            "The gateway in front of TorchServe and TF Serving: traffic, errors and latency per stack, model "
            "and version, each stack's replicas side by side, canary against stable, shadows, each stack's "
            "own metrics and the GPUs."
        )
        .tags(["gateway", "torchserve", "tfserving", "serving"])
        .editable()
        .timezone("browser")
        .time("now-30m", "now")
        .refresh("10s")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .with_variable(model_var)
        .with_variable(version_var)
        .with_variable(protocol_var)
        .annotation(rollouts)
    )
    sections: list[tuple[str, list[Any]]] = [("Stacks", overview_panels())]
    sections += stack_pairs()
    sections += replica_rows()
    sections.append(("Canary, stable and shadows", rollout_panels()))
    sections.append(("The stacks' own metrics (TorchServe left, TF Serving right)", backend_own_panels()))
    sections.append(("GPU (NVIDIA DCGM exporter)", gpu_panels()))
    next_id = 1
    for title, panels in sections:
        builder = builder.with_row(db.Row(title).id(next_id))
        next_id += 1
        for panel in panels:
            builder = builder.with_panel(panel.id(next_id))
            next_id += 1
    result: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return result


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the checked-in JSON differs")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is not what {Path(__file__).name} builds: run it to regenerate", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
