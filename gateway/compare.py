"""``gateway compare``: two model versions under the same steady load, side by side.

The load is an open loop: request *i* of a target starts at ``i / rate`` seconds whatever the
earlier answers did, and the two targets' schedules interleave (B starts half a period after A).
A slow target therefore cannot slow its own load down and hide its tail, as a closed loop of
"send, wait, send" would: every latency is measured from the moment the request was *due*, so a
request held back by a full connection pool counts its wait too.

Besides the client's view (throughput, p50/p90/p99/p99.9, errors), the report takes the gateway's
own view from ``/metrics`` before and after the run: how much of each request the gateway itself
added (``gateway_overhead_seconds``) and how long the backend call took
(``gateway_backend_duration_seconds``). Other traffic to the same versions in the meantime is
counted there too, and with several gateway replicas ``/metrics`` is one replica's.

The table goes to standard output, the same numbers to ``<out>.json`` and a chart of both latency
distributions to ``<out>.png``. Progress bar and table use rich, the chart matplotlib (the
``compare`` extra); both are imported only here, never by the serving gateway.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway import names

if TYPE_CHECKING:
    import aiohttp
    from rich.progress import Progress, TaskID

PROTOCOLS = ("v1", "v2", "torchserve")
QUANTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999))

# Open Inference Protocol datatypes -> numpy, for generated inputs.
_DTYPES: dict[str, str] = {
    "BOOL": "bool",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}


class CompareError(Exception):
    """A failure to report in one line (bad option, unreachable gateway, target answering errors)."""


@dataclass(frozen=True)
class Target:
    """One model version to load, as ``MODEL:VERSION``."""

    model: str
    version: int

    @classmethod
    def parse(cls, text: str) -> Target:
        model, _, version = text.rpartition(":")
        try:
            return cls(names.model_name(model), names.parse_version(version))
        except names.InvalidName as exc:
            raise CompareError(f"target {names.shown(text)}: expected MODEL:VERSION, e.g. mlp:1 ({exc})") from None

    @property
    def name(self) -> str:
        return f"{self.model}:{self.version}"

    def path(self, protocol: str) -> str:
        if protocol == "v1":
            return f"/v1/models/{self.model}/versions/{self.version}:predict"
        if protocol == "v2":
            return f"/v2/models/{self.model}/versions/{self.version}/infer"
        return f"/predictions/{self.model}/{self.version}"


@dataclass
class Options:
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


@dataclass
class Sample:
    """One measured request: when it was due (seconds from the start), how long it took, how it ended."""

    due: float
    latency: float
    lag: float  # how late the client started it (its own scheduling), part of ``latency``
    status: int | None
    error: str | None = None


@dataclass
class Run:
    """Everything measured for one target."""

    target: Target
    samples: list[Sample] = field(default_factory=list)
    backend: str | None = None
    last_error: str | None = None


# --- request bodies --------------------------------------------------------------------------


def _arrays_from_tf_rest(payload: Any, inputs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The named arrays of a TF Serving REST body (row form ``instances`` or column form ``inputs``)."""
    names = [str(i["name"]) for i in inputs]
    dtypes = {str(i["name"]): _DTYPES.get(str(i.get("datatype")), "float32") for i in inputs}
    if not isinstance(payload, dict):
        raise CompareError("sample input: expected a JSON object with 'instances' or 'inputs'")
    if "instances" in payload:
        rows = payload["instances"]
        if rows and isinstance(rows[0], dict):
            return {n: np.asarray([r[n] for r in rows], dtype=dtypes[n]) for n in names}
        if len(names) != 1:
            raise CompareError(f"sample input: row form without names, but the model takes inputs {names}")
        return {names[0]: np.asarray(rows, dtype=dtypes[names[0]])}
    if "inputs" in payload:
        cols = payload["inputs"]
        if isinstance(cols, dict):
            return {n: np.asarray(cols[n], dtype=dtypes[n]) for n in names if n in cols}
        if len(names) != 1:
            raise CompareError(f"sample input: unnamed column form, but the model takes inputs {names}")
        return {names[0]: np.asarray(cols, dtype=dtypes[names[0]])}
    raise CompareError("sample input: expected a JSON object with 'instances' or 'inputs'")


def random_arrays(inputs: list[dict[str, Any]], batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random inputs of each input's shape (``-1`` -> ``batch``) and datatype."""
    arrays: dict[str, np.ndarray] = {}
    for spec in inputs:
        name, datatype = str(spec["name"]), str(spec.get("datatype", "FP32"))
        shape = [batch if int(d) < 0 else int(d) for d in spec.get("shape", [-1])]
        if datatype == "BYTES":
            arrays[name] = np.array(
                ["".join(chr(97 + int(c)) for c in rng.integers(0, 26, 8)) for _ in range(math.prod(shape))],
                dtype=object,
            ).reshape(shape)
            continue
        if datatype not in _DTYPES:
            raise CompareError(f"input {name!r}: cannot generate datatype {datatype}; give --body FILE")
        dtype = np.dtype(_DTYPES[datatype])
        if dtype.kind == "f":
            arrays[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            arrays[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            arrays[name] = rng.integers(0, 10, shape).astype(dtype)
    return arrays


def encode(protocol: str, arrays: dict[str, np.ndarray], inputs: list[dict[str, Any]]) -> bytes:
    """A request body in the protocol's form; TorchServe paths take the TF Serving REST body."""
    if protocol == "v2":
        datatypes = {str(i["name"]): str(i.get("datatype", "FP32")) for i in inputs}
        body: dict[str, Any] = {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatypes.get(name, "FP32"),
                    "shape": list(array.shape),
                    "data": array.ravel().tolist(),
                }
                for name, array in arrays.items()
            ]
        }
    elif len(arrays) == 1:
        body = {"instances": next(iter(arrays.values())).tolist()}
    else:
        body = {"inputs": {name: array.tolist() for name, array in arrays.items()}}
    return json.dumps(body).encode()


async def _metadata(session: aiohttp.ClientSession, url: str, target: Target) -> list[dict[str, Any]]:
    import aiohttp

    where = f"{url}/v2/models/{target.model}/versions/{target.version}"
    try:
        async with session.get(where) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise CompareError(
                    f"{target.name}: metadata answered {resp.status}: {_error_text(text)}{_hint(resp.status)}"
                )
            inputs = json.loads(text).get("inputs")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CompareError(f"cannot reach the gateway at {url}: {exc or type(exc).__name__}") from None
    if not isinstance(inputs, list) or not inputs:
        raise CompareError(f"{target.name}: the metadata names no inputs; give --body FILE")
    return inputs


async def build_body(session: aiohttp.ClientSession, options: Options, target: Target) -> bytes:
    """``--body`` as it is; else the version's ``sample_input.json`` from ``--store``; else random inputs."""
    if options.body is not None:
        return options.body.read_bytes()
    if options.store is not None:
        sample = options.store / target.model / str(target.version) / "sample_input.json"
        if not sample.is_file():
            raise CompareError(f"{target.name}: no {sample}")
        if options.protocol != "v2":
            return sample.read_bytes()
        inputs = await _metadata(session, options.url, target)
        return encode("v2", _arrays_from_tf_rest(json.loads(sample.read_text()), inputs), inputs)
    inputs = await _metadata(session, options.url, target)
    rng = np.random.default_rng(options.seed)
    return encode(options.protocol, random_arrays(inputs, options.batch, rng), inputs)


def _hint(status: int | None) -> str:
    return " (give the key with --api-key or $GATEWAY_API_KEY)" if status == 401 else ""


def _error_text(text: str) -> str:
    try:
        payload = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return str(payload["error"])
    return text.strip()[:300]


# --- the load --------------------------------------------------------------------------------


async def _one(
    session: aiohttp.ClientSession, url: str, body: bytes, due: float, origin: float, run: Run | None
) -> Sample:
    import aiohttp

    loop = asyncio.get_running_loop()
    lag = loop.time() - due
    status: int | None = None
    error: str | None = None
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            status = resp.status
            payload = await resp.read()
            if run is not None:
                run.backend = resp.headers.get("X-Backend", run.backend)
            if status >= 400:
                error = str(status)
                if run is not None:
                    run.last_error = f"{status}: {_error_text(payload.decode(errors='replace'))}"
    except TimeoutError:
        error = "timeout"
    except aiohttp.ClientError as exc:
        error = type(exc).__name__
        if run is not None:
            run.last_error = f"{error}: {exc}"
    end = loop.time()
    return Sample(due=due - origin, latency=end - due, lag=max(lag, 0.0), status=status, error=error)


async def _drive(
    sessions: list[aiohttp.ClientSession],
    urls: list[str],
    bodies: list[bytes],
    runs: list[Run] | None,
    rate: float,
    seconds: float,
    progress: Callable[[int, bool], None] | None = None,
) -> None:
    """The open loop: target ``j``'s request ``i`` is due at ``(i + j / n) / rate``, sent then, awaited later."""
    loop = asyncio.get_running_loop()
    count = max(1, round(rate * seconds))
    origin = loop.time() + 0.05
    tasks: list[tuple[int, asyncio.Task[Sample]]] = []
    n = len(urls)

    def done(j: int) -> Callable[[asyncio.Task[Sample]], None]:
        def record(task: asyncio.Task[Sample]) -> None:
            if progress is not None and not task.cancelled():
                progress(j, task.result().error is None)

        return record

    for i in range(count):
        for j in range(n):
            due = origin + (i + j / n) / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            run = runs[j] if runs is not None else None
            task = asyncio.create_task(_one(sessions[j], urls[j], bodies[j], due, origin, run))
            task.add_done_callback(done(j))
            tasks.append((j, task))
    for j, task in tasks:
        sample = await task
        if runs is not None:
            runs[j].samples.append(sample)


# --- the gateway's own view ------------------------------------------------------------------

Histogram = dict[str, Any]  # {"buckets": {le: count}, "sum": float, "count": float}


def gateway_histograms(text: str, target: Target) -> dict[str, Histogram]:
    """The target's request, backend and overhead histograms from a ``/metrics`` page, summed over series."""
    from prometheus_client.parser import text_string_to_metric_families

    names = {
        "gateway_request_duration_seconds": "request",
        "gateway_backend_duration_seconds": "backend",
        "gateway_overhead_seconds": "overhead",
    }
    out: dict[str, Histogram] = {key: {"buckets": {}, "sum": 0.0, "count": 0.0} for key in names.values()}
    for family in text_string_to_metric_families(text):
        key = names.get(family.name)
        if key is None:
            continue
        hist = out[key]
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model") != target.model or labels.get("version") != str(target.version):
                continue
            if sample.name.endswith("_bucket"):
                le = float(labels["le"])
                hist["buckets"][le] = hist["buckets"].get(le, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                hist["sum"] += sample.value
            elif sample.name.endswith("_count"):
                hist["count"] += sample.value
    return out


def histogram_delta(after: Histogram, before: Histogram) -> Histogram:
    return {
        "buckets": {le: c - before["buckets"].get(le, 0.0) for le, c in after["buckets"].items()},
        "sum": after["sum"] - before["sum"],
        "count": after["count"] - before["count"],
    }


def bucket_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """``histogram_quantile`` as Prometheus computes it: linear within the bucket that holds rank ``q``."""
    edges = sorted(buckets.items())
    if not edges or edges[-1][1] <= 0:
        return None
    total = edges[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for le, cumulative in edges:
        if cumulative >= rank:
            if math.isinf(le):
                return lower  # in the +Inf bucket: the highest finite bound is all that is known
            if cumulative == below:
                return le
            return lower + (le - lower) * (rank - below) / (cumulative - below)
        lower, below = le, cumulative
    return lower


async def _scrape(session: aiohttp.ClientSession, url: str) -> str | None:
    import aiohttp

    try:
        async with session.get(f"{url}/metrics") as resp:
            return await resp.text() if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


# --- the report ------------------------------------------------------------------------------


def summarize(run: Run, rate: float, seconds: float, gateway: dict[str, Histogram] | None) -> dict[str, Any]:
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


# --- the command -----------------------------------------------------------------------------


async def _compare(options: Options) -> tuple[dict[str, Any], list[Run]]:
    import aiohttp

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
        bodies = [await build_body(sessions[0], options, t) for t in targets]
        urls = [base + t.path(options.protocol) for t in targets]
        # One request each first: a target that cannot answer fails here, with the gateway's reason.
        for target, session, url, body in zip(targets, sessions, urls, bodies, strict=True):
            probe = Run(target)
            loop = asyncio.get_running_loop()
            sample = await _one(session, url, body, loop.time(), loop.time(), probe)
            if sample.error is not None:
                reason = probe.last_error or sample.error
                if sample.error == "timeout":
                    reason = f"no answer within --timeout {options.timeout:g} s"
                elif sample.status is None and probe.last_error:
                    raise CompareError(f"cannot reach the gateway at {base}: {probe.last_error}")
                raise CompareError(
                    f"{target.name} ({options.protocol}) failed its first request: {reason}{_hint(sample.status)}"
                )
        if options.warmup > 0:
            await _drive(sessions, urls, bodies, None, options.rate, options.warmup)
        before = await _scrape(sessions[0], base)
        runs = [Run(t) for t in targets]
        total = len(targets) * max(1, round(options.rate * options.seconds))
        started = datetime.now(UTC).isoformat(timespec="seconds")
        progress = _progress(options, total)
        if progress is not None:
            with progress[0]:
                await _drive(sessions, urls, bodies, runs, options.rate, options.seconds, progress[1])
        else:
            await _drive(sessions, urls, bodies, runs, options.rate, options.seconds)
        after = await _scrape(sessions[0], base)
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
