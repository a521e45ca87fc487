"""The comparison's chart: both targets' latency distributions (matplotlib, the ``compare`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from loadgen.send import Run


def plot(runs: list[Run], report: dict[str, Any], path: Path) -> None:
    """Both targets' latency distributions: histogram, percentile curve and latency over time."""
    from matplotlib.figure import Figure

    colours = ("tab:blue", "tab:orange")
    fig = Figure(figsize=(15, 5), dpi=100, layout="constrained")
    hist_ax, pct_ax, time_ax = fig.subplots(1, 3)
    ok = [np.array([s.latency for s in r.samples if s.error is None]) * 1000.0 for r in runs]
    every = np.concatenate([x for x in ok if x.size]) if any(x.size for x in ok) else np.array([1.0])
    low, high = max(every.min() * 0.8, 1e-3), max(every.max() * 1.2, every.min() * 1.01 + 1e-3)
    bins = np.geomspace(low, high, 60)
    for label, run, lat, colour in zip("AB", runs, ok, colours, strict=True):
        name = f"{label}: {run.target.name}" + (f" ({run.backend})" if run.backend else "")
        if not lat.size:
            continue
        hist_ax.hist(lat, bins=bins, alpha=0.55, color=colour, label=name)
        for q, style in ((0.5, "--"), (0.99, ":")):
            hist_ax.axvline(float(np.quantile(lat, q)), color=colour, linestyle=style, linewidth=1)
        ranks = (np.arange(1, lat.size + 1) - 0.5) / lat.size
        pct_ax.plot(1.0 / (1.0 - ranks), np.sort(lat), color=colour, label=name)
        times = np.array([s.due for s in run.samples if s.error is None])
        time_ax.scatter(times, lat, s=4, alpha=0.6, color=colour, label=name)
        errs = [s.due for s in run.samples if s.error is not None]
        if errs:
            time_ax.scatter(errs, [high] * len(errs), marker="x", color=colour, s=12, label=f"{label}: errors")
    hist_ax.set(xscale="log", xlabel="latency (ms)", ylabel="requests", title="Latency distribution (-- p50, : p99)")
    pct_ax.set(xscale="log", yscale="log", xlabel="percentile", ylabel="latency (ms)", title="Latency by percentile")
    pct_ax.set_xticks([1, 2, 10, 100, 1000], ["p0", "p50", "p90", "p99", "p99.9"])
    pct_ax.set_xticks([], minor=True)
    time_ax.set(yscale="log", xlabel="seconds into the run", ylabel="latency (ms)", title="Latency over time")
    for ax in (hist_ax, pct_ax, time_ax):
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(f"gateway compare ({report['protocol']}, {report['rate_per_target']:g} req/s per target, open loop)")
    fig.savefig(path, format="png")
