"""``gateway compare`` against a stand-in gateway in process: open loop, report, chart, errors.

The command is ``loadgen.compare``; the end-to-end run against the real stack is in tests/e2e/test_observability.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from PIL import Image
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from gateway import metrics
from loadgen.bodies import arrays_from_tf_rest as _arrays_from_tf_rest
from loadgen.bodies import encode, random_arrays
from loadgen.compare import CompareError, Options, Target, compare
from loadgen.scrape import bucket_quantile, gateway_histograms, histogram_delta

SIGNATURE = [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]


class FakeGateway:
    """Answers metadata, v1/v2/TorchServe inference and /metrics like the gateway; each version has a behaviour.

    version 1: fast; 2: 300 ms; 5: every second request takes 3 s; 7: always 500.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["backend", "model", "version"]
        self.request = Histogram(
            "gateway_request_duration_seconds", "", labels, buckets=metrics.LATENCY_BUCKETS, registry=self.registry
        )
        self.backend = Histogram(
            "gateway_backend_duration_seconds", "", labels, buckets=metrics.LATENCY_BUCKETS, registry=self.registry
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds", "", labels, buckets=metrics.LATENCY_BUCKETS, registry=self.registry
        )
        self.calls: dict[str, int] = {}
        self.inflight: dict[str, int] = {}
        self.most_inflight: dict[str, int] = {}
        self.key: str | None = None  # when set, inference and metadata need it as X-API-Key
        self.bodies: list[bytes] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        if path == "/metrics":
            return web.Response(body=generate_latest(self.registry), content_type="text/plain")
        if self.key is not None and request.headers.get("X-API-Key") != self.key:
            return web.json_response({"error": "inference needs an API key"}, status=401)
        if request.method == "GET" and path.startswith("/v2/models/"):
            return web.json_response({"name": path.split("/")[3], "inputs": SIGNATURE})
        version = (
            path.split("/versions/")[-1].split(":")[0].split("/")[0] if "/versions/" in path else path.split("/")[-1]
        )
        self.calls[version] = self.calls.get(version, 0) + 1
        self.bodies.append(await request.read())
        delay = {"2": 0.3, "5": 3.0 if self.calls[version] % 2 == 0 else 0.0}.get(version, 0.0)
        self.inflight[version] = self.inflight.get(version, 0) + 1
        self.most_inflight[version] = max(self.most_inflight.get(version, 0), self.inflight[version])
        await asyncio.sleep(delay)
        self.inflight[version] -= 1
        if version == "7":
            return web.json_response({"error": "boom"}, status=500)
        backend = "torchserve" if version in ("1", "5") else "tfserving"
        for hist, value in ((self.request, delay + 0.001), (self.backend, delay), (self.overhead, 0.001)):
            hist.labels(backend, "m", version).observe(value)
        return web.json_response({"predictions": [[0.1, 0.9]]}, headers={"X-Backend": backend})

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.runner = runner
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeGateway:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def fake() -> Iterator[FakeGateway]:
    with FakeGateway() as server:
        yield server


def options(url: str, tmp_path: Path, a: str, b: str, **kw) -> Options:
    return Options(url=url, a=Target.parse(a), b=Target.parse(b), out=tmp_path / "out", progress=False, **kw)


def test_open_loop_keeps_the_schedule_when_a_target_is_slow(fake, tmp_path):
    began = time.monotonic()
    report = compare(options(fake.url, tmp_path, "m:1", "m:2", rate=20, seconds=1, warmup=0))
    elapsed = time.monotonic() - began
    fast, slow = report["targets"]
    assert fast["sent"] == slow["sent"] == 20 and fast["errors"] == slow["errors"] == 0
    # A closed loop would have one request of the slow version in flight at a time; sent on
    # schedule, about 6 overlap (each is held 300 ms, one is sent every 50 ms). A loaded machine
    # sends late ones in bursts: more overlap, never less.
    assert fake.most_inflight["2"] >= 4, fake.most_inflight
    assert slow["latency_ms"]["p50"] >= 300  # the fake holds each one 300 ms: a floor, not a bound
    assert fast["latency_ms"]["p50"] < slow["latency_ms"]["p50"]
    # Throughput counts the run's own span, which lies within the call's.
    assert slow["throughput_rps"] >= slow["ok"] / elapsed
    assert (fast["backend"], slow["backend"]) == ("torchserve", "tfserving")


def test_report_json_png_and_the_gateways_own_numbers(fake, tmp_path):
    report = compare(options(fake.url, tmp_path, "m:1", "m:2", rate=30, seconds=1, warmup=0.2))
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["targets"] == report["targets"] and saved["gateway_metrics"] is True
    fast, slow = saved["targets"]
    # The /metrics deltas cover the measured requests only, not the probe or the warm-up.
    assert fast["gateway"]["requests"] == 30
    assert fast["gateway"]["overhead_mean_ms"] == pytest.approx(1.0)
    assert slow["gateway"]["backend_mean_ms"] == pytest.approx(300.0)
    assert 0.75 <= slow["gateway"]["overhead_p50_ms"] <= 1.0  # within the 0.75-1 ms bucket
    with Image.open(tmp_path / "out.png") as image:
        assert image.size == (1500, 500)
        assert len(image.convert("RGB").getcolors(1 << 20) or []) > 50


def test_bodies_for_each_protocol(fake, tmp_path):
    compare(options(fake.url, tmp_path, "m:1", "m:3", rate=5, seconds=0.4, warmup=0, protocol="v2", batch=3))
    body = json.loads(fake.bodies[-1])
    (tensor,) = body["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("x", "FP32", [3, 4])
    assert len(tensor["data"]) == 12
    store = tmp_path / "store"
    for version in (1, 3):
        (store / "m" / str(version)).mkdir(parents=True)
        (store / "m" / str(version) / "sample_input.json").write_text(json.dumps({"instances": [[version] * 4]}))
    fake.bodies.clear()
    compare(
        options(fake.url, tmp_path, "m:1", "m:3", rate=5, seconds=0.4, warmup=0, protocol="torchserve", store=store)
    )
    assert {json.loads(b)["instances"][0][0] for b in fake.bodies} == {1, 3}


def test_errors_and_timeouts_are_counted(fake, tmp_path):
    # Every second request to version 5 takes 3 s, twice the timeout: those 5 time out however
    # loaded the machine; the others answer at once, so nearly all of them (not all: a loaded
    # machine may hold one past 1.5 s) come back.
    report = compare(options(fake.url, tmp_path, "m:1", "m:5", rate=10, seconds=1, warmup=0, timeout=1.5))
    flaky = report["targets"][1]
    assert flaky["error_kinds"] == {"timeout": flaky["errors"]} and flaky["errors"] >= 5, flaky
    assert flaky["ok"] >= 1
    assert flaky["ok"] + flaky["errors"] == flaky["sent"] == 10


def test_a_failing_target_stops_the_run_with_its_reason(fake, tmp_path):
    with pytest.raises(CompareError, match=r"m:7 \(v1\) failed its first request: 500: boom"):
        compare(options(fake.url, tmp_path, "m:1", "m:7", seconds=1))
    assert not (tmp_path / "out.json").exists()


def test_an_api_key_is_sent_when_given(fake, tmp_path):
    fake.key = "k-123"
    with pytest.raises(CompareError, match=r"metadata answered 401: .* \(give the key with --api-key"):
        compare(options(fake.url, tmp_path, "m:1", "m:3", seconds=1))
    report = compare(options(fake.url, tmp_path, "m:1", "m:3", rate=5, seconds=0.4, warmup=0, api_key="k-123"))
    assert [t["errors"] for t in report["targets"]] == [0, 0]


def test_an_unreachable_gateway_is_said_so(tmp_path):
    with pytest.raises(CompareError, match=r"cannot reach the gateway at http://127\.0\.0\.1:9"):
        compare(options("http://127.0.0.1:9", tmp_path, "m:1", "m:2", seconds=1))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"rate": 0}, "--rate"),
        ({"seconds": -1}, "--seconds"),
        ({"protocol": "grpc"}, "--protocol"),
        ({"timeout": 0}, "--timeout"),
        ({"store": Path("."), "body": Path("pyproject.toml")}, "not both"),
        ({"body": Path("no-such-file.json")}, "no such file"),
    ],
)
def test_options_are_checked(tmp_path, kw, message):
    with pytest.raises(CompareError, match=message):
        compare(options("http://127.0.0.1:9", tmp_path, "m:1", "m:2", **kw))


@pytest.mark.parametrize(
    "text",
    ["mlp", "mlp:", ":1", "mlp:0", "mlp:stable", "mlp:-1", "my:model:12", "evil\n:1", "mlp:1\n", "mlp:\u0661"],
)
def test_targets_are_model_colon_version(text):
    with pytest.raises(CompareError, match="MODEL:VERSION"):
        Target.parse(text)
    assert Target.parse("my.model-2:12") == Target("my.model-2", 12)


def test_bucket_quantile_is_prometheus_histogram_quantile():
    buckets = {0.1: 10.0, 0.5: 60.0, 1.0: 100.0, float("inf"): 100.0}
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * 40 / 50)
    assert bucket_quantile(0.05, buckets) == pytest.approx(0.05)
    assert bucket_quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * 39 / 40)
    assert bucket_quantile(0.99, {1.0: 10.0, float("inf"): 20.0}) == 1.0  # in +Inf: the last finite bound
    assert bucket_quantile(0.5, {1.0: 0.0, float("inf"): 0.0}) is None


def test_histograms_are_read_from_a_metrics_page_and_subtracted():
    registry = CollectorRegistry()
    hist = Histogram(
        "gateway_overhead_seconds", "", ["backend", "model", "version"], buckets=(0.001, 0.01), registry=registry
    )
    hist.labels("torchserve", "mlp", "1").observe(0.0005)
    before = gateway_histograms(generate_latest(registry).decode(), Target("mlp", 1))
    for value in (0.002, 0.003, 0.5):
        hist.labels("torchserve", "mlp", "1").observe(value)
    hist.labels("tfserving", "mlp", "2").observe(0.002)  # another version: not counted
    after = gateway_histograms(generate_latest(registry).decode(), Target("mlp", 1))
    delta = histogram_delta(after["overhead"], before["overhead"])
    assert delta["count"] == 3 and delta["sum"] == pytest.approx(0.505)
    assert delta["buckets"] == {0.001: 0.0, 0.01: 2.0, float("inf"): 3.0}


def test_inputs_generated_and_converted():
    rng = np.random.default_rng(0)
    spec = [
        {"name": "a", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "b", "datatype": "INT64", "shape": [-1]},
        {"name": "c", "datatype": "BYTES", "shape": [-1]},
    ]
    arrays = random_arrays(spec, 3, rng)
    assert arrays["a"].shape == (3, 2) and arrays["a"].dtype == np.float32
    assert arrays["b"].shape == (3,) and arrays["b"].dtype == np.int64
    assert arrays["c"].shape == (3,) and isinstance(arrays["c"][0], str)
    v1 = json.loads(encode("v1", arrays, spec))
    assert set(v1["inputs"]) == {"a", "b", "c"} and len(v1["inputs"]["a"]) == 3
    one = json.loads(encode("torchserve", {"x": np.ones((2, 4), np.float32)}, SIGNATURE))
    assert one == {"instances": [[1.0] * 4] * 2}
    rows = _arrays_from_tf_rest({"instances": [[1, 2, 3, 4]]}, SIGNATURE)
    assert rows["x"].dtype == np.float32 and rows["x"].shape == (1, 4)
    cols = _arrays_from_tf_rest({"inputs": {"x": [[1, 2, 3, 4]]}}, SIGNATURE)
    assert cols["x"].tolist() == rows["x"].tolist()
    with pytest.raises(CompareError, match="cannot generate datatype"):
        random_arrays([{"name": "z", "datatype": "COMPLEX", "shape": [1]}], 1, rng)
