"""``gateway compare``: two model versions under the same steady load, side by side.

The load is an open loop (``schedule.interleaved``): request *i* of a target starts at ``i / rate``
seconds whatever the earlier answers did, and the two targets' schedules interleave (B starts half
a period after A). Every latency is measured from the moment the request was *due*.

Besides the client's view (throughput, p50/p90/p99/p99.9, errors), the report takes the gateway's
own view from ``/metrics`` before and after the run: how much of each request the gateway itself
added (``gateway_overhead_seconds``) and how long the backend call took
(``gateway_backend_duration_seconds``). Other traffic to the same versions in the meantime is
counted there too, and with several gateway replicas ``/metrics`` is one replica's.

The table goes to standard output, the same numbers to ``<out>.json`` and a chart of both latency
distributions to ``<out>.png``. Progress bar and table use rich, the chart matplotlib (the
``compare`` extra), imported only when the command runs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from loadgen import schedule
from loadgen.bodies import build_body, hint
from loadgen.plot import plot
from loadgen.report import print_table, summarize
from loadgen.scrape import gateway_histograms, histogram_delta, metrics_page
from loadgen.send import Run, send_due
from loadgen.targets import PROTOCOLS, CompareError, Target

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["CompareError", "Options", "Target", "compare"]


@dataclass
class Options:
    """The command's options (``gateway compare --help`` says what each means)."""

    url: str
    a: Target
    b: Target
    rate: float = 50.0
    seconds: float = 20.0
    warmup: float = 1.0
    protocol: str = "v1"
    out: Path = Path("results")
    store: Path | None = None
    body: Path | None = None
    timeout: float = 10.0
    max_inflight: int = 256
    batch: int = 1
    seed: int = 0
    progress: bool = True
    api_key: str | None = None

    def check(self) -> None:
        """``CompareError`` naming the first option out of range."""
        if self.protocol not in PROTOCOLS:
            raise CompareError(f"--protocol {self.protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        if not (0 < self.rate <= 10_000):
            raise CompareError(f"--rate {self.rate}: expected requests per second per target, 0 < rate <= 10000")
        if not (0 < self.seconds <= 3600):
            raise CompareError(f"--seconds {self.seconds}: expected 0 < seconds <= 3600")
        if self.rate * self.seconds < 1:
            raise CompareError("--rate x --seconds is below one request per target: nothing to measure")
        if not (0 <= self.warmup <= 60):
            raise CompareError(f"--warmup {self.warmup}: expected 0 <= seconds <= 60")
        if not (0 < self.timeout <= 600):
            raise CompareError(f"--timeout {self.timeout}: expected 0 < seconds <= 600")
        if self.max_inflight < 1:
            raise CompareError("--max-inflight must be at least 1")
        if self.batch < 1:
            raise CompareError("--batch must be at least 1")
        if self.store is not None and self.body is not None:
            raise CompareError("give --store or --body, not both")
        if self.body is not None and not self.body.is_file():
            raise CompareError(f"--body {self.body}: no such file")
        if self.store is not None and not self.store.is_dir():
            raise CompareError(f"--store {self.store}: no such directory")


async def _probe(
    options: Options, base: str, target: Target, session: aiohttp.ClientSession, url: str, body: bytes
) -> None:
    """One request first: a target that cannot answer fails here, with the gateway's reason."""
    probe = Run(target)
    loop = asyncio.get_running_loop()
    sample = await send_due(session, url, body, loop.time(), loop.time(), probe)
    if sample.error is None:
        return
    reason = probe.last_error or sample.error
    if sample.error == "timeout":
        reason = f"no answer within --timeout {options.timeout:g} s"
    elif sample.status is None and probe.last_error:
        raise CompareError(f"cannot reach the gateway at {base}: {probe.last_error}")
    raise CompareError(f"{target.name} ({options.protocol}) failed its first request: {reason}{hint(sample.status)}")


async def _compare(options: Options) -> tuple[dict[str, Any], list[Run]]:
    targets = [options.a, options.b]
    timeout = aiohttp.ClientTimeout(total=options.timeout)
    base = options.url.rstrip("/")
    headers = {"X-API-Key": options.api_key} if options.api_key else {}
    sessions = [
        aiohttp.ClientSession(
            timeout=timeout, headers=headers, connector=aiohttp.TCPConnector(limit=options.max_inflight)
        )
        for _ in targets
    ]
    try:
        bodies = [
            await build_body(
                sessions[0],
                options.url,
                t,
                options.protocol,
                body=options.body,
                store=options.store,
                batch=options.batch,
                seed=options.seed,
            )
            for t in targets
        ]
        urls = [base + t.path(options.protocol) for t in targets]
        for target, session, url, body in zip(targets, sessions, urls, bodies, strict=True):
            await _probe(options, base, target, session, url, body)
        if options.warmup > 0:
            await schedule.interleaved(sessions, urls, bodies, None, options.rate, options.warmup)
        before = await metrics_page(sessions[0], base)
        runs = [Run(t) for t in targets]
        total = len(targets) * max(1, round(options.rate * options.seconds))
        started = datetime.now(UTC).isoformat(timespec="seconds")
        progress = _progress(options, total)
        if progress is not None:
            with progress[0]:
                await schedule.interleaved(sessions, urls, bodies, runs, options.rate, options.seconds, progress[1])
        else:
            await schedule.interleaved(sessions, urls, bodies, runs, options.rate, options.seconds)
        after = await metrics_page(sessions[0], base)
    finally:
        for session in sessions:
            await session.close()
    reports = []
    for run in runs:
        gateway = None
        if before is not None and after is not None:
            b, a = gateway_histograms(before, run.target), gateway_histograms(after, run.target)
            gateway = {key: histogram_delta(a[key], b[key]) for key in a}
        reports.append(summarize(run, options.rate, options.seconds, gateway))
    report = {
        "gateway_url": base,
        "protocol": options.protocol,
        "rate_per_target": options.rate,
        "seconds": options.seconds,
        "warmup_seconds": options.warmup,
        "timeout_seconds": options.timeout,
        "started_at": started,
        "open_loop": True,
        "gateway_metrics": before is not None and after is not None,
        "targets": reports,
    }
    return report, runs


def _progress(options: Options, total: int) -> tuple[Progress, Callable[[int, bool], None]] | None:
    if not options.progress:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("errors {task.fields[errors]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    tasks: list[TaskID] = [
        progress.add_task(f"{label}: {t.name}", total=total // 2, errors=0)
        for label, t in zip("AB", (options.a, options.b), strict=True)
    ]
    errors = [0, 0]

    def advance(j: int, ok: bool) -> None:
        if not ok:
            errors[j] += 1
        progress.update(tasks[j], advance=1, errors=errors[j])

    return progress, advance


def compare(options: Options) -> dict[str, Any]:
    """Run the comparison, print the table, write ``<out>.json`` and ``<out>.png``; returns the report."""
    options.check()
    try:
        import matplotlib  # noqa: F401
        import rich  # noqa: F401
    except ImportError as exc:
        raise CompareError(
            f"needs the 'compare' extra ({exc.name} is missing): pip install 'twin-stack-gateway[compare]'"
        ) from None
    out = options.out.with_suffix("") if options.out.suffix in (".json", ".png") else options.out
    out.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    report, runs = asyncio.run(_compare(options))
    report["wall_seconds"] = round(time.monotonic() - began, 3)
    json_path, png_path = Path(f"{out}.json"), Path(f"{out}.png")
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    plot(runs, report, png_path)
    print_table(report)
    print(f"wrote {json_path} and {png_path}")
    return report
