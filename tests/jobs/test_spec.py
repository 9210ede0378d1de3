"""Job definitions: the CRD's fields parsed, every mistake refused in one line."""

from __future__ import annotations

from typing import Any

import pytest

from amber.domain.errors import InvalidArgument
from amber.jobs.spec import Keep, Retention, Task, parse_job, parse_jobs


def job(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "nightly",
        "task": "snapshot",
        "cron": "0 2 * * *",
        "retain": 7,
        "groups": ["default"],
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def test_full_backup_job_parses() -> None:
    spec = parse_job(
        job(
            task="backup",
            target="nas",
            retain=None,
            keep={"daily": 30},
            retainLocal=6,
            timezone="Europe/Berlin",
            concurrency=2,
            jitter="5m",
            skipUnchanged=False,
            volumes=["db"],
            selector={"matchLabels": {"app": "web"}},
            labels={"tier": "gold"},
        )
    )
    assert spec.task is Task.BACKUP
    assert spec.retention == Retention(0, Keep(daily=30))
    assert spec.local_retention == Retention(6)
    assert spec.jitter == 300.0
    assert spec.concurrency == 2
    assert not spec.skip_unchanged
    assert spec.selection.volumes == ("db",)
    assert spec.selection.match_labels == (("app", "web"),)
    assert spec.labels == (("tier", "gold"),)


def test_defaults() -> None:
    spec = parse_job(job())
    assert spec.timezone == "UTC"
    assert spec.concurrency == 1
    assert spec.jitter == 0
    assert spec.skip_unchanged
    assert spec.local_retention == Retention(1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"task": "defrag"}, "unknown task 'defrag'"),
        ({"cron": "0 2 * *"}, "must have 5 fields"),
        ({"cron": "61 2 * * *"}, "not a valid cron expression"),
        ({"cron": "0 0 * * * *"}, "must have 5 fields"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"retain": -1}, "retain must be 0 or more, not -1"),
        ({"retain": "7"}, "retain must be a whole number"),
        ({"concurrency": 0}, "concurrency must be 1 or more"),
        ({"retain": 0}, "keeps no snapshots"),
        ({"retain": None}, "keeps no snapshots"),
        ({"keep": {"daily": -2}, "retain": None}, "keep.daily must be 0 or more"),
        ({"keep": {"fortnightly": 2}}, "unknown field 'keep.fortnightly'"),
        ({"jitter": "5 minutes"}, "invalid duration"),
        ({"groups": None}, "selects no volume"),
        ({"task": "backup"}, "needs target"),
        ({"target": "nas"}, "target applies to backup, prune and check jobs"),
        ({"retainLocal": 3}, "retainLocal applies to backup jobs only"),
        ({"readData": True}, "readData applies to check jobs only"),
        ({"task": "prune", "target": "nas", "retain": None}, "volumes, selector, groups"),
        ({"task": "trim", "retain": 3}, "retain applies to snapshot, backup"),
        ({"volumes": ["../etc"]}, "invalid volume name"),
        ({"selector": {"matchExpressions": []}}, "unknown field 'selector.matchExpressions'"),
        ({"skipUnchanged": "yes"}, "skipUnchanged must be true or false"),
        ({"name": "bad name"}, "invalid job name"),
        ({"name": None}, "name is required"),
        ({"cron": None}, "cron is required"),
    ],
)
def test_mistakes_are_one_line(fields: dict[str, Any], message: str) -> None:
    raw = job(**fields)
    for key, value in fields.items():
        if value is None:
            raw.pop(key, None)
    with pytest.raises(InvalidArgument) as caught:
        parse_job(raw)
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_document_names_are_unique_and_fields_known() -> None:
    assert parse_jobs({"jobs": []}) == []
    assert [j.name for j in parse_jobs({"jobs": [job(), job(name="hourly")]})] == [
        "nightly",
        "hourly",
    ]
    with pytest.raises(InvalidArgument, match="defined twice"):
        parse_jobs({"jobs": [job(), job()]})
    with pytest.raises(InvalidArgument, match="top-level field 'job'"):
        parse_jobs({"job": []})
    with pytest.raises(InvalidArgument, match="must be a list"):
        parse_jobs({"jobs": "nightly"})


def test_selection_union_and_default_group() -> None:
    spec = parse_job(
        job(volumes=["a"], selector={"matchLabels": {"app": "web"}}, groups=["default", "gold"])
    )
    sel = spec.selection
    assert sel.selects("a", {}, frozenset({"other"}))
    assert sel.selects("b", {"app": "web"}, frozenset({"other"}))
    assert sel.selects("c", {}, frozenset())  # no group: in `default`
    assert sel.selects("d", {}, frozenset({"gold"}))
    assert not sel.selects("e", {"app": "db"}, frozenset({"other"}))


def test_the_crd_schema_accepts_what_parse_job_accepts_and_refuses_unknown_fields() -> None:
    import jsonschema

    from amber.jobs.spec import openapi_schema

    schema = openapi_schema()
    examples = [
        job(),
        job(
            task="backup",
            target="nas",
            keep={"daily": 30},
            retainLocal=6,
            jitter="5m",
            selector={"matchLabels": {"app": "web"}},
            labels={"tier": "gold"},
            concurrency=2,
        ),
        {"name": "p", "task": "prune", "cron": "0 4 * * 0", "target": "nas"},
        {"name": "c", "task": "check", "cron": "0 5 1 * *", "target": "nas", "readData": True},
    ]
    for example in examples:
        parse_job(example)
        jsonschema.validate(example, schema)
    for bad in (job(colour="red"), job(task="defrag"), job(retain=-1), job(concurrency=0)):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
        with pytest.raises(InvalidArgument):
            parse_job(bad)


def test_the_crd_schema_dumps_as_plain_yaml() -> None:
    import yaml

    from amber.jobs.spec import openapi_schema

    assert "&id" not in yaml.safe_dump(openapi_schema())  # no anchors in a CRD
