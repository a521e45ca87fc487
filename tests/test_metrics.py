"""Metric values are right: counts, histogram counts, and the backend time and the gateway's
overhead each measuring what their names say."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}
ROW = {"instances": [[1.0, 2.0, 3.0, 4.0]]}


def scrape(client) -> dict[tuple[str, tuple], float]:
    text = client.get("/metrics").text
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(values, name, **labels) -> float:
    return sum(v for (n, ls), v in values.items() if n == name and all((k, x) in ls for k, x in labels.items()))


def test_counts_and_histograms_after_n_requests(client):
    before = scrape(client)
    n = 7
    for _ in range(n):
        assert client.post("/v1/models/toy/versions/2:predict", json=ROW).status_code == 200
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    sel = {"model": "toy", "version": "2", "backend": "tfserving"}
    assert delta("gateway_requests_total", protocol="tfserving_rest", code="200", **sel) == n
    assert delta("gateway_request_duration_seconds_count", label="", **sel) == n
    assert delta("gateway_backend_duration_seconds_count", **sel) == n
    assert delta("gateway_overhead_seconds_count", **sel) == n
    assert value(after, "gateway_backend_up", backend="tfserving") == 1


def test_backend_time_is_the_backend_call_and_overhead_excludes_it(client, fake_backends, monkeypatch):
    """A backend that takes at least 0.5 s: every backend (and request) observation is over 0.25 s,
    every overhead observation under it. Were the backend timer around the wrong code, or the
    overhead to include the backend call, the buckets would say so; 0.25 s of in-process overhead
    per request is far beyond what even a loaded machine adds, and the backend's time is a floor."""
    slow = 0.5
    backend = fake_backends["tfserving"]
    infer = backend.infer

    async def slow_infer(target, request):
        await asyncio.sleep(slow)
        return await infer(target, request)

    monkeypatch.setattr(backend, "infer", slow_infer)
    before = scrape(client)
    n = 3
    for _ in range(n):
        assert client.post("/v1/models/toy/versions/2:predict", json=ROW).status_code == 200
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    sel = {"model": "toy", "version": "2", "backend": "tfserving"}
    assert delta("gateway_backend_duration_seconds_bucket", le="0.25", **sel) == 0
    assert delta("gateway_backend_duration_seconds_count", **sel) == n
    assert delta("gateway_backend_duration_seconds_sum", **sel) >= n * slow
    assert delta("gateway_request_duration_seconds_bucket", le="0.25", **sel) == 0
    assert delta("gateway_request_duration_seconds_sum", **sel) >= n * slow
    assert delta("gateway_overhead_seconds_bucket", le="0.25", **sel) == n


def test_errors_by_class_and_unknown_models_are_not_labels(client):
    before = scrape(client)
    client.post("/v1/models/toy:predict", json={"instances": [[1, 2]]})
    client.post("/v1/models/no-such-model-xyz:predict", json=ROW)
    after = scrape(client)
    assert (
        value(after, "gateway_errors_total", model="toy", error="BadRequest")
        - value(before, "gateway_errors_total", model="toy", error="BadRequest")
        == 1
    )
    assert (
        value(after, "gateway_errors_total", model="_unrouted", error="NotFound")
        - value(before, "gateway_errors_total", model="_unrouted", error="NotFound")
        == 1
    )
    assert not any("no-such-model-xyz" in str(labels) for (_, labels) in after)


def test_version_mapping_and_rollout_events(client):
    values = scrape(client)
    assert value(values, "gateway_model_version_info", model="toy", label="stable", version="1") == 1
    assert value(values, "gateway_model_version_info", model="toy", label="default", version="1") == 1
    client.post("/admin/models/toy/promote", json={"version": 3}, headers=ADMIN)
    values = scrape(client)
    assert value(values, "gateway_model_version_info", model="toy", label="stable", version="3") == 1
    assert value(values, "gateway_model_version_info", model="toy", label="stable", version="1") == 0
    assert value(values, "gateway_rollout_events_total", model="toy", action="promote") >= 1
