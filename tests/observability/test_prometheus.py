"""Prometheus configuration and rules: promtool's checks and unit tests, and what they reference.

promtool comes from Debian's prometheus package (deploy/prometheus/install.sh): these tests skip
without it, and fail under CI=true.
"""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import job_targets
from tests.observability.tools import (
    PROMETHEUS_DIR,
    gateway_metric_names,
    metric_names,
    replica_metric_names,
    require_tool,
)

CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
# What the backends export (checked against live scrapes in tests/e2e/test_observability.py).
BACKEND_METRICS = {"up"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        [require_tool("promtool"), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, f"promtool {' '.join(args)}:\n{run.stdout}\n{run.stderr}"
    return run


def rules() -> list[dict]:
    return [
        rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
    ]


def alerts() -> list[dict]:
    return [r for r in rules() if "alert" in r]


def test_scrape_jobs_are_the_compose_services():
    config = yaml.safe_load(CONFIG.read_text())
    jobs = {
        job["job_name"]: (job.get("metrics_path", "/metrics"), job_targets(job)) for job in config["scrape_configs"]
    }
    assert jobs == {
        "gateway": ("/metrics", ["gateway:8001"]),  # GATEWAY_METRICS_PORT in compose; every replica
        "torchserve": ("/metrics", ["torchserve:8082"]),
        "tfserving": ("/monitoring/prometheus/metrics", ["tfserving:8501"]),
        "dcgm": ("/metrics", ["dcgm-exporter:9400"]),
    }
    assert config["global"]["scrape_interval"] == "5s"
    assert config["rule_files"] == ["rules/recording.yml", "rules/alerts.yml"]
    assert all((PROMETHEUS_DIR / f).is_file() for f in config["rule_files"])


def test_promtool_check_config():
    promtool("check", "config", str(CONFIG))


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path):
    promtool("check", "rules", str(path))


def test_promtool_rule_unit_tests():
    assert TEST_FILES
    run = promtool("test", "rules", *map(str, TEST_FILES))
    assert "SUCCESS" in run.stdout


def test_every_alert_is_unit_tested_firing_and_not_firing():
    seen: dict[str, set[str]] = defaultdict(set)
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                seen[check["alertname"]].add("firing" if check.get("exp_alerts") else "not firing")
    names = {a["alert"] for a in alerts()}
    assert names == {
        "ServingBackendUnreachable",
        "ServingTargetDown",
        "GatewayErrorRatioHigh",
        "GatewayLatencyP99AboveSLO",
        "CanaryLatencyWorseThanStable",
        "CanaryErrorRatioWorseThanStable",
        "ShadowDisagreementHigh",
        "ServingReplicaDown",
        "ServingStackBelowTwoReplicas",
        "ServingStackNoReplicaUp",
    }
    for name in names:
        assert seen[name] == {"firing", "not firing"}, f"{name}: tested {sorted(seen[name]) or 'not at all'}"


def test_rules_read_only_metrics_that_exist():
    recorded = {r["record"] for r in rules() if "record" in r}
    known = gateway_metric_names() | replica_metric_names() | BACKEND_METRICS | recorded
    for rule in rules():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('record') or rule.get('alert')}: unknown metrics {unknown}"


def test_every_alert_has_a_severity_a_summary_and_a_duration():
    for alert in alerts():
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], alert["alert"]
        assert alert.get("for"), alert["alert"]


def test_recording_rules_follow_the_naming_convention():
    for rule in rules():
        if "record" in rule:
            level, metric, operations = rule["record"].split(":")
            assert level and metric.startswith("gateway_") and operations, rule["record"]


def test_replica_rules_group_by_stack_and_replica_only():
    """The per-replica series are aggregated over gateway replicas (instance, job) to one series per
    backend replica or per stack: bounded by the replicas, one alert per replica or stack."""
    for rule in rules():
        if not metric_names(rule["expr"]) & (replica_metric_names() | {"stack:gateway_replicas_up:count"}):
            continue
        name = rule.get("record") or rule["alert"]
        groupings = set(re.findall(r"\bby \(([^)]*)\)", rule["expr"]))
        assert groupings <= {"stack", "stack, replica"}, (name, groupings)
        assert "by (" in rule["expr"] or rule["expr"].startswith("stack:"), name


def test_install_script_is_valid_and_a_no_op_when_installed():
    script = PROMETHEUS_DIR / "install.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    require_tool("promtool")
    require_tool("prometheus")
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and run.stdout == "" and run.stderr == "", run
