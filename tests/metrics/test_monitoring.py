"""deploy/monitoring: the alerts use metrics that exist, with labels those metrics have."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from amber.metrics import Metrics, PoolStats, TargetStats, VolumeStats

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
SCRAPE_LABELS = {"node", "job", "instance", "namespace", "pod"}
"""Labels the scrape (target labels and the relabelings of deploy/monitoring) adds."""


def exposed() -> dict[str, set[str]]:
    """Every sample name a fully fed registry exposes, with its label names."""
    metrics = Metrics()
    metrics.record_backup("failure", 1.0)
    metrics.record_restore("failure", 1.0)
    metrics.record_csi_call("Probe", "OK", 0.1)
    metrics.record_job_run("nightly", "failure", 1.0)
    metrics.record_job_run("nightly", "success", 1.0)
    metrics.watch(
        pool=lambda: PoolStats(1, 1, 1, 1, 1.0, 1, 1, 1, 1, 1, False),
        volumes=lambda: [VolumeStats("v", "block", 1, 1, False, 1, 1, 1)],
        targets=lambda: [TargetStats("t", True, 1.0, 0.1)],
    )
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert document["kind"] == "PrometheusRule"
    return [rule for group in document["spec"]["groups"] for rule in group["rules"]]


def test_the_alerts_the_issue_asks_for_are_there() -> None:
    alerts = {rule["alert"] for rule in rules()}
    assert {
        "AmberPoolNearlyFull",
        "AmberBackupsFailing",
        "AmberTargetDown",
        "AmberVolumeConditionAbnormal",
    } <= alerts


def test_every_metric_in_the_rules_exists_with_the_labels_used() -> None:
    names = exposed()
    for rule in rules():
        expr = rule["expr"]
        used = set(re.findall(r"\bamber_[a-z0-9_]+", expr))
        assert used, f"{rule['alert']} uses no Amber metric"
        missing = used - set(names)
        assert not missing, f"{rule['alert']}: no such metric {sorted(missing)}"
        labels = set().union(*(names[n] for n in used)) | SCRAPE_LABELS
        for matcher in re.findall(r"\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*[=!~]", matcher):
                assert label in labels, f"{rule['alert']}: label {label} in {expr}"
        text = " ".join(str(v) for v in rule.get("annotations", {}).values())
        for label in re.findall(r"\$labels\.(\w+)", text):
            assert label in labels, f"{rule['alert']}: annotation uses label {label}"
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}


def test_the_check_catches_a_misspelt_metric() -> None:
    names = exposed()
    assert "amber_backups_total" in names
    assert "amber_backups" not in names  # a counter's family name is not a series
    assert "amber_pool_free" not in names


def test_monitors_scrape_the_port_the_pods_name() -> None:
    base = MONITORING.parent / "base"
    for workload in ("node.yaml", "controller.yaml"):
        document = yaml.safe_load((base / workload).read_text())
        pod = document["spec"]["template"]["spec"]
        amber = next(c for c in pod["containers"] if c["name"] == "amber")
        ports = {p["name"]: p["containerPort"] for p in amber.get("ports", [])}
        assert ports.get("metrics") == 9809, workload
        assert "--metrics-address=0.0.0.0:9809" in amber["args"], workload
    service = yaml.safe_load((MONITORING / "service.yaml").read_text())
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    for name, key in (
        ("servicemonitor.yaml", "endpoints"),
        ("podmonitor.yaml", "podMetricsEndpoints"),
    ):
        monitor = yaml.safe_load((MONITORING / name).read_text())
        assert [e["port"] for e in monitor["spec"][key]] == ["metrics"]
