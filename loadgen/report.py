"""What a run measured, as numbers (a JSON-ready summary) and as tables (rich for the terminal, Markdown).

A client-side summary per target (throughput, percentiles, errors, the client's own start lag),
plus the gateway's own view from its ``/metrics`` deltas when both readings were taken.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from loadgen.scrape import Histogram, bucket_quantile
from loadgen.send import Run

QUANTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999))


def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``."""
    return float(np.percentile(np.array(values), q))


def summarize(run: Run, rate: float, seconds: float, gateway: dict[str, Histogram] | None) -> dict[str, Any]:
    """One target's report: the client's view, and the gateway's when its histograms are given."""
    ok = [s for s in run.samples if s.error is None]
    errors = Counter(s.error for s in run.samples if s.error is not None)
    span = max(seconds, max((s.due + s.latency for s in run.samples), default=0.0))
    latencies = np.array([s.latency for s in ok]) * 1000.0
    lags = np.array([s.lag for s in run.samples]) * 1000.0
    latency: dict[str, float | None] = dict.fromkeys([*(name for name, _ in QUANTILES), "mean", "max"])
    if latencies.size:
        for name, q in QUANTILES:
            latency[name] = float(np.quantile(latencies, q))
        latency["mean"] = float(latencies.mean())
        latency["max"] = float(latencies.max())
    report: dict[str, Any] = {
        "target": run.target.name,
        "model": run.target.model,
        "version": run.target.version,
        "backend": run.backend,
        "sent": len(run.samples),
        "ok": len(ok),
        "errors": sum(errors.values()),
        "error_kinds": dict(sorted(errors.items())),
        "last_error": run.last_error,
        "offered_rps": rate,
        "throughput_rps": len(ok) / span if span > 0 else 0.0,
        "latency_ms": latency,
        "client_start_lag_p99_ms": float(np.quantile(lags, 0.99)) if lags.size else None,
        "gateway": None,
    }
    if gateway is not None and gateway["request"]["count"] > 0:
        ms = 1000.0

        def mean(h: Histogram) -> float | None:
            return h["sum"] / h["count"] * ms if h["count"] > 0 else None

        def quantile(h: Histogram, q: float) -> float | None:
            value = bucket_quantile(q, h["buckets"])
            return None if value is None else value * ms

        report["gateway"] = {
            "requests": gateway["request"]["count"],
            "request_mean_ms": mean(gateway["request"]),
            "backend_mean_ms": mean(gateway["backend"]),
            "overhead_mean_ms": mean(gateway["overhead"]),
            "overhead_p50_ms": quantile(gateway["overhead"], 0.50),
            "overhead_p99_ms": quantile(gateway["overhead"], 0.99),
        }
    return report


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.2f}{unit}" if abs(value) < 100 else f"{value:,.1f}{unit}"
    return f"{value}{unit}"


def table_rows(reports: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """The rows of the side-by-side table: a label, then one cell per target."""

    def row(label: str, get: Callable[[dict[str, Any]], Any], unit: str = "") -> tuple[str, list[str]]:
        return label, [_fmt(get(r), unit) for r in reports]

    def gw(key: str) -> Callable[[dict[str, Any]], Any]:
        return lambda r: r["gateway"][key] if r["gateway"] else None

    rows = [
        row("backend", lambda r: r["backend"]),
        row("requests sent", lambda r: r["sent"]),
        row("offered rate", lambda r: r["offered_rps"], " /s"),
        row("throughput achieved", lambda r: r["throughput_rps"], " /s"),
        row(
            "errors",
            lambda r: (
                f"{r['errors']} ({', '.join(f'{k}: {v}' for k, v in r['error_kinds'].items())})" if r["errors"] else "0"
            ),
        ),
    ]

    def lat(key: str) -> Callable[[dict[str, Any]], Any]:
        return lambda r: r["latency_ms"][key]

    rows += [row(f"latency {name}", lat(name), " ms") for name, _ in QUANTILES]
    rows += [
        row("latency max", lat("max"), " ms"),
        row("gateway: request mean", gw("request_mean_ms"), " ms"),
        row("gateway: backend mean", gw("backend_mean_ms"), " ms"),
        row("gateway: overhead mean", gw("overhead_mean_ms"), " ms"),
        row("gateway: overhead p50 (≈)", gw("overhead_p50_ms"), " ms"),
        row("gateway: overhead p99 (≈)", gw("overhead_p99_ms"), " ms"),
        row("client start lag p99", lambda r: r["client_start_lag_p99_ms"], " ms"),
    ]
    return rows


def print_table(report: dict[str, Any]) -> None:
    """The comparison's side-by-side table on standard output (rich), with its warnings."""
    from rich.console import Console
    from rich.table import Table

    targets = report["targets"]
    console = Console()
    console.print(
        f"[bold]gateway compare[/bold]: {report['protocol']}, {report['rate_per_target']:g} req/s to each target "
        f"for {report['seconds']:g} s, open loop, at {report['gateway_url']}"
    )
    table = Table()
    table.add_column("")
    for label, t in zip("AB", targets, strict=True):
        table.add_column(f"{label}: {t['target']}", justify="right")
    for label, cells in table_rows(targets):
        table.add_row(label, *cells)
    console.print(table)
    for t in targets:
        if t["last_error"]:
            console.print(f"[yellow]{t['target']}: last error {t['last_error']}[/yellow]")
    lag = max((t["client_start_lag_p99_ms"] or 0.0) for t in targets)
    if lag > 10:
        console.print(
            f"[yellow]the client started requests up to {lag:.0f} ms late (p99): it is near its own limit, "
            "and the latencies include that delay; lower --rate or run it on another machine[/yellow]"
        )


def markdown(rows: list[dict[str, object]]) -> str:
    """Rows as a Markdown table, floats to three decimals; the columns are every key in the order
    first seen, a key a row lacks (or holds None for) shown as a dash."""
    keys = list(dict.fromkeys(k for row in rows for k in row))

    def cell(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else "—" if v is None else str(v)

    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        out.append("| " + " | ".join(cell(row.get(k)) for k in keys) + " |")
    return "\n".join(out)
