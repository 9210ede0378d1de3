"""The operator's pure rules: which node a PV is on, a claim's groups, snapshot names, the job
definition handed to amber.jobs, and the test clock."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from amber.domain.errors import InvalidArgument
from amber.domain.names import NAME_MAX
from amber.jobs.spec import DEFAULT_GROUP, parse_job
from amber.kube.clock import ScaledClock, parse_scale
from amber.kube.resources import (
    GROUP_LABEL_PREFIX,
    JobObject,
    claim_groups,
    job_definition,
    pv_node,
    snapshot_name,
)

AT = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC)


def pv(driver: str = "amber.csi.dev", key: str = "topology.amber.csi.dev/node") -> dict:
    expression = {"key": key, "operator": "In", "values": ["node-a"]}
    return {
        "spec": {
            "csi": {"driver": driver, "volumeHandle": "amber:v1:vol:node-a:pvc-1"},
            "nodeAffinity": {
                "required": {"nodeSelectorTerms": [{"matchExpressions": [expression]}]}
            },
        }
    }


def test_a_pv_is_on_the_node_its_affinity_names() -> None:
    assert pv_node(pv()) == "node-a"
    assert pv_node(pv(driver="other.csi.dev")) is None
    assert pv_node(pv(key="kubernetes.io/hostname")) is None
    assert pv_node({"spec": {"csi": {"driver": "amber.csi.dev"}}}) is None


def test_groups_come_from_enabled_group_labels() -> None:
    labels = {
        f"{GROUP_LABEL_PREFIX}nightly": "enabled",
        f"{GROUP_LABEL_PREFIX}weekly": "disabled",
        "app": "web",
    }
    assert claim_groups(labels) == frozenset({"nightly"})
    assert claim_groups({"app": "web"}) == frozenset()  # amber.jobs puts it in `default`


def test_snapshot_names_are_valid_unique_per_slot_and_bounded() -> None:
    assert snapshot_name("hourly", "web", AT) == "hourly-web-20261203-100000"
    long = snapshot_name("j" * 63, "p" * 253, AT)
    assert len(long) <= 253
    assert long.endswith("-20261203-100000")
    assert snapshot_name("j" * 63, "p" * 253, AT) == long  # deterministic: idempotent retries
    assert snapshot_name("j" * 63, "q" * 253, AT) != long


def job(spec: dict) -> JobObject:
    return JobObject("team-a", "nightly", "uid-1", 1, spec, {})


def test_the_definition_is_the_spec_named_after_the_object_without_the_classes() -> None:
    spec = {"task": "backup", "cron": "0 2 * * *", "retain": 7, "groups": [DEFAULT_GROUP]}
    definition = job_definition(job({**spec, "snapshotClassName": "amber-backup"}), "s3")
    assert definition == {**spec, "name": "nightly", "target": "s3"}
    parsed = parse_job(definition)
    assert parsed.target == "s3"
    assert parsed.name == "nightly"
    # A target in the spec wins over the class's (and parse_job checks it).
    assert job_definition(job({**spec, "target": "mine"}), "s3")["target"] == "mine"
    assert len("nightly") <= NAME_MAX


def test_the_scaled_clock_runs_faster_and_stops_when_asked() -> None:
    clock = ScaledClock(3600.0)  # a second is an hour
    before = clock.now()
    time.sleep(0.01)
    assert (clock.now() - before).total_seconds() >= 30  # 0.01 s x 3600
    stop = threading.Event()
    stop.set()
    assert clock.sleep_until(clock.now().replace(year=2100), stop) is False
    assert clock.sleep_until(before, threading.Event()) is True  # already past


@pytest.mark.parametrize("text", ["abc", "0", "-60", "0.5", "nan", "inf", "1e9"])
def test_the_time_scale_knob_refuses_nonsense(text: str) -> None:
    with pytest.raises(InvalidArgument, match="AMBER_JOBS_TIME_SCALE"):
        parse_scale(text)
    assert parse_scale("60") == 60.0
