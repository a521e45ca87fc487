"""Observability end to end: a real Prometheus scrapes the real local stack through the project's
own deploy/prometheus/prometheus.yml, and every query of the dashboard and of the rules runs on it;
then ``gateway compare`` runs against the stack and its JSON and PNG are opened.

The Prometheus config is the project's file with nothing changed but the targets (compose host
names -> the local stack's ports) and the intervals (5s -> 1s): job names, metrics paths and rule
files stay as they are, and ``test_the_config_is_the_projects_with_only_targets_and_intervals_replaced``
checks that. Needs ``prometheus`` (deploy/prometheus/install.sh): skipped without it, failed under CI=true.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import yaml

from tests.deploy.conftest import job_targets
from tests.e2e.conftest import STORE
from tests.observability.promserver import Prometheus, free_port, local_config
from tests.observability.tools import (
    PROMETHEUS_DIR,
    ROOT,
    load_dashboard,
    panel_queries,
    require_tool,
    substitute,
)

INTERVAL = "1s"
RATE_INTERVAL = "15s"
# The two ways the dashboard is looked at in the test: everything, and one model with two versions
# (a multi-value selection, formatted as Grafana formats it for a regex matcher).
SELECTIONS = (
    {"model": ".+", "version": ".+", "protocol": ".+"},
    {"model": "mlp", "version": "(1|2)", "protocol": "(tfserving_rest|oip|torchserve|tfserving_grpc|oip_grpc)"},
)
COMPOSE_TARGETS = {"gateway:8001", "torchserve:8082", "tfserving:8501", "dcgm-exporter:9400"}


def _hostport(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.hostname}:{parsed.port}"


@pytest.fixture(scope="module")
def prometheus(stack, tmp_path_factory) -> Iterator[Prometheus]:
    binary = require_tool("prometheus")
    targets = {
        "gateway:8001": _hostport(stack.gateway_url),  # the local gateway keeps /metrics on its one port
        "torchserve:8082": _hostport(stack.torchserve_metrics_url),
        "tfserving:8501": _hostport(stack.tfserving_rest_url),
        "dcgm-exporter:9400": f"127.0.0.1:{free_port()}",  # no GPU here: a port nobody listens on
    }
    text = local_config((PROMETHEUS_DIR / "prometheus.yml").read_text(), targets, INTERVAL)
    server = Prometheus(binary, tmp_path_factory.mktemp("prometheus"), text)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_the_config_is_the_projects_with_only_targets_and_intervals_replaced(prometheus):
    ours = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    used = yaml.safe_load(prometheus.config.read_text())
    assert used["rule_files"] == ours["rule_files"]
    assert used["global"] == {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL}
    assert [j["job_name"] for j in used["scrape_configs"]] == [j["job_name"] for j in ours["scrape_configs"]]
    where = {"static_configs", "dns_sd_configs"}
    for mine, theirs in zip(used["scrape_configs"], ours["scrape_configs"], strict=True):
        assert {k: v for k, v in mine.items() if k not in where} == {k: v for k, v in theirs.items() if k not in where}
        assert set(job_targets(theirs)) <= COMPOSE_TARGETS


def _admin(stack) -> httpx.Client:
    token = stack.gateway_environment()["GATEWAY_ADMIN_TOKEN"]
    return httpx.Client(base_url=stack.gateway_url, timeout=30, headers={"Authorization": f"Bearer {token}"})


def _traffic(stack) -> dict[str, int]:
    """A few hundred requests through the gateway to both stacks, every protocol, and some errors."""
    rng = np.random.default_rng(5)
    mlp = rng.normal(size=(2, 4)).round(4).tolist()
    cnn = rng.normal(size=(1, 3, 32, 32)).round(3).tolist()
    cnn_flat = np.asarray(cnn, dtype=np.float32).ravel().tolist()
    calls: list[tuple[str, Any, int]] = []
    for version in (1, 2, 3):
        calls += [(f"/v1/models/mlp/versions/{version}:predict", {"instances": mlp}, 200)] * 40
    calls += [("/v1/models/mlp:predict", {"instances": mlp}, 200)] * 80  # stable / canary, shadowed
    for version in (1, 2):
        calls += [(f"/v2/models/cnn/versions/{version}/infer", {"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": cnn_flat}]}, 200)] * 15  # fmt: skip
        calls += [(f"/predictions/cnn/{version}", {"instances": cnn}, 200)] * 10
        calls += [(f"/v1/models/mlp/versions/{version}:predict", {"instances": [[1.0]]}, 400)] * 10
    calls += [("/v1/models/mlp/versions/9:predict", {"instances": mlp}, 404)] * 10
    calls += [("/v1/models/nope:predict", {"instances": mlp}, 404)] * 10
    calls = [calls[i] for i in rng.permutation(len(calls))]
    counts: dict[str, int] = {}
    for _, _, code in calls:
        counts[str(code)] = counts.get(str(code), 0) + 1

    with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
        started = time.monotonic()

        def send(index: int) -> None:
            path, body, expected = calls[index]
            # Paced over ~5 s so that the 1 s scrapes see the counters grow.
            time.sleep(max(0.0, 5.0 * index / len(calls) - (time.monotonic() - started)))
            response = client.post(path, json=body)
            assert response.status_code == expected, f"{path}: {response.status_code} {response.text}"

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(send, range(len(calls))))
    return counts


def _has_data(result: dict[str, Any]) -> bool:
    data = result["data"]["result"]
    if result["data"]["resultType"] == "scalar":
        return True
    return any(math.isfinite(float(s["value"][1])) for s in data)


def test_every_dashboard_and_rule_query_runs_on_real_data(stack, prometheus):
    prom = prometheus
    prom.wait_for(
        "the gateway, TorchServe and TF Serving scraped",
        lambda: {
            t["labels"]["job"]
            for t in prom.api("targets")["activeTargets"]
            if t["health"] == "up"
        }
        >= {"gateway", "torchserve", "tfserving"},
    )  # fmt: skip
    # A canary on the other stack and a shadow that disagrees (mlp v3 has other weights), so that
    # the canary, stable and shadow panels have something to show; undone at the end.
    admin = _admin(stack)
    try:
        assert admin.put("/admin/models/mlp/traffic", json={"canary": 2, "percent": 50}).status_code == 200
        assert admin.put("/admin/models/mlp/shadow", json={"version": 3, "percent": 100}).status_code == 200
        sent = _traffic(stack)
        assert sent["200"] >= 250 and sent["400"] and sent["404"]
        # The last requests' counters, scraped and through one rule evaluation.
        prom.wait_for(
            "shadow outcomes and the canary mapping scraped",
            lambda: (
                _has_data(prom.query('gateway_shadow_requests_total{outcome="disagree"}'))
                and _has_data(prom.query('gateway_model_version_info{label="canary"}'))
            ),
        )
        time.sleep(2.5)
        problems: list[str] = []

        # Every query of every panel, for each selection of the template variables.
        dashboard = load_dashboard()
        for variables in SELECTIONS:
            for q in panel_queries(dashboard):
                expr = substitute(q.expr, variables, RATE_INTERVAL)
                result = prom.query(expr)
                where = f"panel {q.panel_id} {q.panel_title!r} {q.ref_id} {variables}"
                if result.get("status") != "success":
                    problems.append(f"{where}: {result.get('error')}\n    {expr}")
                # The GPU panels have no data without GPUs, the replica rows none without agents
                # (tests/observability/test_replica_metrics.py runs those on the per-replica series).
                elif not q.gpu and not q.replica and not _has_data(result):
                    problems.append(f"{where}: no data\n    {expr}")

        # The template variables' own queries: label_values(selector, label).
        for var in dashboard["templating"]["list"]:
            text = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
            inner = text.removeprefix("label_values(").removesuffix(")")
            selector, _, label = inner.rpartition(",")
            selector = substitute(selector.strip(), SELECTIONS[0], RATE_INTERVAL)
            values = prom.api(f"label/{label.strip()}/values", **{"match[]": selector})
            if not values:
                problems.append(f"variable {var['name']}: {text} has no values")

        # The rollout annotation: the traffic and shadow changes above are rollout events.
        for annotation in dashboard["annotations"]["list"]:
            result = prom.query(annotation["expr"])
            if result.get("status") != "success" or not result["data"]["result"]:
                problems.append(f"annotation {annotation['name']}: {result}")

        # Every recording and alerting rule, loaded without error and valid as a query.
        groups = prom.api("rules")["groups"]
        files = {Path(g["file"]).name for g in groups}
        assert files == {"recording.yml", "alerts.yml"}, files
        for group in groups:
            for rule in group["rules"]:
                name = rule["name"]
                if rule["health"] != "ok":
                    problems.append(f"rule {name}: {rule['health']} {rule.get('lastError')}")
                result = prom.query(rule["query"])
                if result.get("status") != "success":
                    problems.append(f"rule {name}: {result.get('error')}")
        # The recording rules about traffic and latency recorded series from the real metrics.
        for name in (
            "backend_model_version:gateway_requests:rate1m",
            "backend_model_version:gateway_request_errors:ratio_rate1m",
            "backend_model_version:gateway_request_duration_seconds:p99_1m",
            "backend_model_version:gateway_overhead_seconds:p50_1m",
            "model_versions:gateway_shadow_disagreement:ratio_rate5m",
        ):
            if not _has_data(prom.query(name)):
                problems.append(f"recorded series {name}: no data")
        backends = {
            s["metric"]["backend"]
            for s in prom.query("backend_model_version:gateway_requests:rate1m")["data"]["result"]
        }
        assert backends == {"torchserve", "tfserving"}
        assert not problems, "\n".join(problems)
    finally:
        admin.put("/admin/models/mlp/traffic", json={"canary": None, "percent": 0})
        admin.put("/admin/models/mlp/shadow", json={"version": None, "percent": 0})
        admin.close()


# --- gateway compare -------------------------------------------------------------------------


def _compare(stack, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--url", stack.gateway_url, "compare", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "120"},
    )


def _check_png(path: Path) -> None:
    from PIL import Image

    assert path.stat().st_size > 20_000, path.stat().st_size
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (1500, 500)
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    not_white = (pixels < 245).any(axis=2).mean()
    assert 0.03 < not_white < 0.9, not_white
    # Both targets' colours are there (matplotlib's tab:blue and tab:orange).
    for rgb in ((31, 119, 180), (255, 127, 14)):
        close = (np.abs(pixels - np.array(rgb)).sum(axis=2) < 60).sum()
        assert close > 200, (rgb, close)


def _check_report(report: dict[str, Any], a: str, b: str, backends: tuple[str, str]) -> None:
    assert [t["target"] for t in report["targets"]] == [a, b]
    assert report["open_loop"] is True and report["gateway_metrics"] is True
    for target, backend in zip(report["targets"], backends, strict=True):
        assert target["backend"] == backend
        assert target["sent"] > 0 and target["ok"] == target["sent"], target
        assert target["errors"] == 0 and target["throughput_rps"] > 0
        latency = target["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p99.9"] <= latency["max"]
        gateway = target["gateway"]
        assert gateway["requests"] >= target["sent"]
        for key in ("request_mean_ms", "backend_mean_ms", "overhead_mean_ms", "overhead_p50_ms", "overhead_p99_ms"):
            assert gateway[key] > 0, (key, gateway)
        assert gateway["backend_mean_ms"] < gateway["request_mean_ms"]


def test_compare_two_versions_across_stacks(stack, tmp_path):
    out = tmp_path / "results"
    run = _compare(stack, out, "--a", "mlp:1", "--b", "mlp:2", "--rate", "40", "--seconds", "3")
    assert run.returncode == 0, run.stderr
    assert "A: mlp:1" in run.stdout and "B: mlp:2" in run.stdout and "latency p99.9" in run.stdout
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["protocol"] == "v1" and report["rate_per_target"] == 40
    _check_report(report, "mlp:1", "mlp:2", ("torchserve", "tfserving"))
    assert all(t["sent"] == 120 for t in report["targets"])
    _check_png(out.with_suffix(".png"))


def test_compare_with_the_stores_samples_over_the_open_inference_protocol(stack, tmp_path):
    out = tmp_path / "cnn"
    run = _compare(
        stack, out, "--a", "cnn:2", "--b", "cnn:1", "--rate", "10", "--seconds", "2", "--protocol", "v2",
        "--store", str(STORE), "--warmup", "0", "--no-progress",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    _check_report(json.loads(out.with_suffix(".json").read_text()), "cnn:2", "cnn:1", ("tfserving", "torchserve"))
    _check_png(out.with_suffix(".png"))


def test_compare_says_clearly_what_is_wrong(stack, tmp_path):
    run = _compare(stack, tmp_path / "x", "--a", "mlp:1", "--b", "mlp:9", "--seconds", "1")
    assert run.returncode == 1
    assert (
        run.stderr.strip()
        == "gateway compare: mlp:9: metadata answered 404: model 'mlp' has no version 9 (versions: 1, 2, 3)"
    )
    body = tmp_path / "bad.json"
    body.write_text('{"instances": [[1.0, 2.0]]}')
    run = _compare(stack, tmp_path / "x", "--a", "mlp:1", "--b", "mlp:2", "--seconds", "1", "--body", str(body))
    assert run.returncode == 1
    assert run.stderr.startswith("gateway compare: mlp:1 (v1) failed its first request: 400: "), run.stderr
    assert "expected shape [-1, 4], got [1, 2]" in run.stderr
    assert not (tmp_path / "x.json").exists()
