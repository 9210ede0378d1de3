"""Every metric follows Prometheus' naming conventions and carries only bounded labels."""

from __future__ import annotations

import re

import pytest
from prometheus_client.core import Metric

from amber.metrics import Metrics, PoolStats, TargetStats, VolumeStats

NAME = re.compile(r"amber_[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
LABEL = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
UNITS = ("_bytes", "_seconds", "_ratio")
COUNTS = {
    # Gauges that count things (no unit): what they count is their last word.
    "amber_pool_volumes",
    "amber_pool_snapshots",
    "amber_pool_backup_bases",
    "amber_volume_inodes",
    "amber_volume_inodes_used",
    "amber_operations_in_flight",
}
FLAGS = {
    # 0/1 gauges.
    "amber_pool_full",
    "amber_volume_condition_abnormal",
    "amber_target_up",
    "amber_scrape_collector_success",
    "amber_build_info",
}
COUNTERS_WITHOUT_UNIT = {"amber_backups", "amber_restores", "amber_csi_calls"} | {
    "amber_job_runs",
    "amber_job_failures",
}
FORBIDDEN_LABELS = {
    "snapshot",
    "snapshot_id",
    "snapshot_name",
    "backup",
    "backup_id",
    "id",
    "uid",
    "request_id",
    "error",
    "message",
    "reason",
    "path",
    "secret",
    "password",
    "key",
    "token",
    "url",
    "endpoint",
}
RESERVED_LABELS = {"job", "instance", "node", "namespace", "pod", "container", "service"}
"""Labels Prometheus (`job`, `instance`) and the Kubernetes service discovery relabelings of
deploy/monitoring (`node`, ...) put on every series: a metric's own would be renamed."""
ALLOWED_LABELS = {"volume", "mode", "target", "recurring_job", "method", "code", "outcome"} | {
    "kind",
    "collector",
    "version",
    "le",
}


def families() -> list[Metric]:
    """Every family of a registry whose sources and events all have samples."""
    metrics = Metrics(version="1.2.3")
    metrics.record_backup("success", 1.0, 1, 1, 1)
    metrics.record_restore("failure", 1.0, 1)
    metrics.record_csi_call("CreateVolume", "OK", 0.1)
    metrics.record_job_run("nightly", "success", 1.0)
    metrics.watch(
        pool=lambda: PoolStats(1, 1, 1, 1, 1.0, 1, 1, 1, 1, 1, False),
        volumes=lambda: [VolumeStats("v", "filesystem", 1, 1, False, 1, 1, 1)],
        targets=lambda: [TargetStats("t", True, 1.0, 0.1)],
    )
    return list(metrics.registry.collect())


FAMILIES = families()


def test_the_registry_has_the_metrics_the_brief_lists() -> None:
    names = {f.name for f in FAMILIES}
    assert {
        "amber_volume_capacity_bytes",
        "amber_volume_used_bytes",
        "amber_volume_inodes",
        "amber_volume_inodes_used",
        "amber_volume_condition_abnormal",
        "amber_pool_size_bytes",
        "amber_pool_free_bytes",
        "amber_pool_capacity_free_bytes",
        "amber_pool_overprovisioning_ratio",
        "amber_pool_volumes",
        "amber_pool_snapshots",
        "amber_pool_snapshots_bytes",
        "amber_pool_backup_bases_bytes",
        "amber_target_up",
        "amber_target_last_check_timestamp_seconds",
        "amber_target_probe_latency_seconds",
        "amber_backups",
        "amber_backup_duration_seconds",
        "amber_backup_read_bytes",
        "amber_backup_new_bytes",
        "amber_backup_stored_bytes",
        "amber_restores",
        "amber_restore_duration_seconds",
        "amber_restore_downloaded_bytes",
        "amber_operations_in_flight",
        "amber_csi_calls",
        "amber_csi_call_duration_seconds",
        "amber_job_last_success_timestamp_seconds",
        "amber_job_failures",
    } <= names


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_names_follow_the_conventions(family: Metric) -> None:
    assert NAME.fullmatch(family.name), family.name
    assert family.documentation.strip(), f"{family.name} has no help text"
    assert not family.name.endswith("_total"), "prometheus_client adds _total to counters"
    if family.type == "counter":
        assert family.name.endswith(UNITS) or family.name in COUNTERS_WITHOUT_UNIT
        assert all(s.name == f"{family.name}_total" for s in family.samples)
    elif family.type == "histogram":
        assert family.name.endswith("_seconds")
    else:
        assert family.type == "gauge"
        assert family.name.endswith(UNITS) or family.name in COUNTS | FLAGS, family.name
    # Base units only: no milli, kilo, mega...
    assert not re.search(r"_(milli|micro|kilo|mega|giga|k|m|g|mi|ki)(bytes|seconds)", family.name)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_labels_are_bounded(family: Metric) -> None:
    assert family.samples, f"{family.name} had no sample to check"
    for sample in family.samples:
        for label in sample.labels:
            assert LABEL.fullmatch(label), label
            assert label not in FORBIDDEN_LABELS, f"{family.name} has the label {label}"
            assert label not in RESERVED_LABELS, f"{family.name} has the label {label}"
            assert label in ALLOWED_LABELS, f"{family.name}: new label {label}? add it here"


def test_names_are_unique_across_collectors() -> None:
    names = [f.name for f in FAMILIES]
    assert len(names) == len(set(names))
