"""The RecurringJob CRD says what amber.jobs says: the same fields, the refusals a schema can
express, examples that Amber's own parser accepts, and the RBAC the operator needs."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
import yaml

from amber.domain.errors import InvalidArgument
from amber.jobs.spec import parse_job
from amber.kube.resources import KUBE_FIELDS, JobObject, crd_spec_schema, job_definition
from tests.deploy.conftest import DEPLOY
from tests.deploy.test_manifests import Rendered, find, strict

Obj = dict[str, Any]
CRD = DEPLOY / "base" / "crd-recurringjob.yaml"
EXAMPLES = DEPLOY / "examples" / "recurring-jobs.yaml"


def crd_version() -> Obj:
    crd = yaml.safe_load(CRD.read_text())
    [version] = crd["spec"]["versions"]
    result: Obj = version
    return result


def spec_schema() -> Obj:
    result: Obj = crd_version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return result


def jobs_fields() -> set[str]:
    """The fields amber.jobs knows, from the one-line error of its parser."""
    with pytest.raises(InvalidArgument) as refused:
        parse_job({"name": "x", "task": "snapshot", "cron": "* * * * *", "nosuchfield": 1})
    known = re.search(r"\(known: ([^)]*)\)", refused.value.message)
    assert known is not None, refused.value.message
    return {f.strip() for f in known.group(1).split(",")}


def without_descriptions(schema: Any) -> Any:
    if isinstance(schema, list):
        return [without_descriptions(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {k: without_descriptions(v) for k, v in schema.items() if k != "description"}


def test_the_spec_schema_is_amber_jobs_schema() -> None:
    """One field list: the CRD's spec is amber.jobs' schema made structural, plus the classes
    (descriptions aside). On a difference, put crd_spec_schema()'s constraints in the YAML."""
    assert without_descriptions(spec_schema()) == crd_spec_schema()


def test_the_spec_fields_are_amber_jobs_fields_plus_the_classes() -> None:
    fields = set(spec_schema()["properties"])
    assert fields - set(KUBE_FIELDS) == jobs_fields() - {"name"}  # name: metadata.name
    assert set(KUBE_FIELDS) <= fields


def errors(spec: Obj) -> list[str]:
    body = {"apiVersion": "amber.csi.dev/v1alpha1", "kind": "RecurringJob", "spec": spec}
    schema = strict(crd_version()["schema"]["openAPIV3Schema"])
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(body)
    ]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"retain": -1}, "spec.retain"),
        ({"task": "explode"}, "spec.task"),
        ({"concurrency": 0}, "spec.concurrency"),
        ({"keep": {"daily": -7}}, "spec.keep.daily"),
        ({"keep": {"fortnightly": 1}}, "spec.keep"),
        ({"retian": 3}, "spec"),
        ({"cron": ""}, "spec.cron"),
    ],
)
def test_the_schema_refuses(change: Obj, where: str) -> None:
    good = {"task": "snapshot", "cron": "0 * * * *", "retain": 3, "groups": ["default"]}
    assert errors(good) == []
    found = errors({**good, **change})
    assert found, change
    assert all(e.startswith(where) for e in found), found


def test_the_printer_columns_and_the_status_subresource() -> None:
    version = crd_version()
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Task"] == ".spec.task"
    assert columns["Cron"] == ".spec.cron"
    for column in ("Last Run", "Next Run", "Last Outcome"):
        assert columns[column].startswith(".status.")


def test_the_examples_are_valid_jobs() -> None:
    examples = [d for d in yaml.safe_load_all(EXAMPLES.read_text()) if d]
    assert len(examples) >= 4
    for obj in examples:
        assert errors(obj["spec"]) == []
        job = JobObject.of(obj)
        target = "default" if obj["spec"]["task"] == "backup" else None  # amber-backup's
        spec = parse_job(job_definition(job, target))
        assert spec.name == obj["metadata"]["name"]


def rules(objects: list[Obj], kind: str, name: str) -> list[Obj]:
    role = find(objects, kind, name)
    assert role is not None
    found: list[Obj] = role["rules"]
    return found


def allowed(rules_: list[Obj], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
        for r in rules_
    )


@pytest.mark.parametrize("account", ["amber-node", "amber-controller"])
def test_the_operator_s_rbac(rendered: Rendered, account: str) -> None:
    granted = rules(rendered["base"], "ClusterRole", account)
    for verb in ("get", "list", "watch"):
        assert allowed(granted, "amber.csi.dev", "recurringjobs", verb)
    assert allowed(granted, "amber.csi.dev", "recurringjobs/status", "patch")
    assert not allowed(granted, "amber.csi.dev", "recurringjobs", "update")  # status only
    assert allowed(granted, "", "events", "create")
    if account == "amber-node":
        for verb in ("create", "delete", "list"):
            assert allowed(granted, "snapshot.storage.k8s.io", "volumesnapshots", verb)
        assert allowed(granted, "snapshot.storage.k8s.io", "volumesnapshotclasses", "get")
        assert allowed(granted, "snapshot.storage.k8s.io", "volumesnapshotcontents", "get")
        assert allowed(granted, "", "persistentvolumes", "get")


def test_the_crd_is_installed_and_the_nodes_run_the_operator(rendered: Rendered) -> None:
    objects = rendered["base"]
    assert find(objects, "CustomResourceDefinition", "recurringjobs.amber.csi.dev") is not None
    node = find(objects, "DaemonSet", "amber-node", "amber-system")
    assert node is not None
    [amber] = [c for c in node["spec"]["template"]["spec"]["containers"] if c["name"] == "amber"]
    assert "--recurring-jobs" in amber["args"]
