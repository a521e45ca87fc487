"""Metric values are right: counts, histogram counts, and overhead + backend = duration."""

from __future__ import annotations

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
    total = delta("gateway_request_duration_seconds_sum", **sel)
    parts = delta("gateway_backend_duration_seconds_sum", **sel) + delta("gateway_overhead_seconds_sum", **sel)
    assert abs(total - parts) < 1e-9
    assert value(after, "gateway_backend_up", backend="tfserving") == 1


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
