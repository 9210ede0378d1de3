"""deploy/monitoring outside its kustomization (the PodMonitor alternative), and the schemas
that stand in for the Prometheus Operator's CRDs: they pass what is right, catch what is not."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from tests.deploy.conftest import DEPLOY
from tests.deploy.test_manifests import schema_errors

MONITORING = DEPLOY / "monitoring"


def load(name: str) -> dict[str, Any]:
    document = yaml.safe_load((MONITORING / name).read_text())
    assert isinstance(document, dict)
    return document


def test_every_monitoring_file_validates() -> None:
    files = sorted(p.name for p in MONITORING.glob("*.yaml") if p.name != "kustomization.yaml")
    assert {"podmonitor.yaml", "servicemonitor.yaml", "prometheusrule.yaml"} <= set(files)
    for name in files:
        assert schema_errors(load(name), {}) == [], name


def test_the_schemas_catch_mistakes() -> None:
    monitor = load("podmonitor.yaml")
    typo = copy.deepcopy(monitor)
    typo["spec"]["podMetricsEndpoints"][0]["intreval"] = "30s"
    assert any("'intreval' was unexpected" in e for e in schema_errors(typo, {}))
    bad_duration = copy.deepcopy(monitor)
    bad_duration["spec"]["podMetricsEndpoints"][0]["interval"] = "30 seconds"
    assert schema_errors(bad_duration, {})
    rule = load("prometheusrule.yaml")
    no_expr = copy.deepcopy(rule)
    del no_expr["spec"]["groups"][0]["rules"][0]["expr"]
    assert any("'expr' is a required property" in e for e in schema_errors(no_expr, {}))
    both = copy.deepcopy(rule)
    both["spec"]["groups"][0]["rules"][0]["record"] = "amber:pool_free:ratio"
    assert schema_errors(both, {})
