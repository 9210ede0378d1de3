"""What a recurring job is: its definition, parsed and checked once.

A job definition uses the camelCase fields of the Kubernetes `RecurringJob` spec, so one schema
serves the YAML file `amber schedule` reads and the custom resource the operator watches:

    name: nightly              # the job, and the prefix of what it creates
    task: backup               # snapshot | backup | snapshot-cleanup | prune | check | trim
    cron: "0 2 * * *"          # 5 fields: minute hour day-of-month month day-of-week
    timezone: Europe/Berlin    # IANA zone the cron and the GFS buckets are read in (UTC)
    retain: 30                 # backups (or snapshots) to keep, newest first
    keep: {daily: 7, weekly: 4, monthly: 12}   # grandfather-father-son, with or instead of retain
    retainLocal: 6             # backup jobs: local snapshots left on the node
    keepLocal: {hourly: 24}    # ... and their GFS policy
    target: offsite            # backup, prune, check: the backup target
    concurrency: 2             # volumes this job works on at once (1)
    jitter: 5m                 # each volume starts up to this much after the slot (0)
    skipUnchanged: true        # create nothing for a volume unchanged since the job's last run
    volumes: [db]              # selection: names,
    selector: {matchLabels: {app: web}}   # labels,
    groups: [default]          # and groups (a volume with no group is in group `default`)
    labels: {tier: gold}       # added to what the job creates
    readData: false            # check: read and verify every byte

Every mistake is refused with one line naming the job and the field (InvalidArgument, exit 2).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import CroniterBadDateError, croniter

from amber.domain.errors import InvalidArgument, NotFound
from amber.domain.labels import DEFAULT_GROUP, check_label_key, check_label_value
from amber.domain.names import validate_name
from amber.domain.units import parse_duration

__all__ = [
    "DEFAULT_GROUP",
    "JOB_NAME_MAX",
    "JobSpec",
    "Keep",
    "Retention",
    "Selection",
    "Task",
    "check_cron",
    "check_timezone",
    "load_jobs_file",
    "openapi_schema",
    "parse_job",
    "parse_jobs",
]

JOB_NAME_MAX = 63
"""A job's name prefixes the names of what it creates (`<job>-<UTC time>`), so it stays short."""
MAX_CONCURRENCY = 1000
_T = TypeVar("_T")
MAX_COUNT = 100_000


class Task(StrEnum):
    """What a job does at each run."""

    SNAPSHOT = "snapshot"
    BACKUP = "backup"
    SNAPSHOT_CLEANUP = "snapshot-cleanup"
    PRUNE = "prune"
    CHECK = "check"
    TRIM = "trim"

    @property
    def per_volume(self) -> bool:
        """True for tasks that run once per selected volume (prune and check run per target)."""
        return self not in (Task.PRUNE, Task.CHECK)

    @property
    def needs_target(self) -> bool:
        return self in (Task.BACKUP, Task.PRUNE, Task.CHECK)

    @property
    def retains(self) -> bool:
        """True for tasks that delete what is beyond their retention after a successful run."""
        return self in (Task.SNAPSHOT, Task.BACKUP, Task.SNAPSHOT_CLEANUP)

    @property
    def creates(self) -> bool:
        """True for tasks that create snapshots or backups (and so may skip unchanged volumes)."""
        return self in (Task.SNAPSHOT, Task.BACKUP)


@dataclass(frozen=True)
class Keep:
    """Grandfather-father-son counts: the newest item of each of the last N periods."""

    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def any(self) -> bool:
        return any((self.hourly, self.daily, self.weekly, self.monthly, self.yearly))


@dataclass(frozen=True)
class Retention:
    """What a job keeps of one kind of item: the newest `retain`, plus the GFS `keep` (union)."""

    retain: int = 0
    keep: Keep = field(default_factory=Keep)

    def keeps_nothing(self) -> bool:
        return self.retain == 0 and not self.keep.any()


@dataclass(frozen=True)
class Selection:
    """Which volumes a job applies to: the union of named volumes, label matches and groups."""

    volumes: tuple[str, ...] = ()
    match_labels: tuple[tuple[str, str], ...] = ()
    groups: tuple[str, ...] = ()

    def empty(self) -> bool:
        return not (self.volumes or self.match_labels or self.groups)

    def selects(self, name: str, labels: Mapping[str, str], groups: frozenset[str]) -> bool:
        """Whether a volume with this name, labels and groups is one the job applies to."""
        if name in self.volumes:
            return True
        if self.match_labels and all(labels.get(k) == v for k, v in self.match_labels):
            return True
        in_groups = groups or frozenset({DEFAULT_GROUP})
        return any(group in in_groups for group in self.groups)


@dataclass(frozen=True)
class JobSpec:
    """One recurring job, checked. See the module docstring for the meaning of each field."""

    name: str
    task: Task
    cron: str
    timezone: str = "UTC"
    retention: Retention = field(default_factory=Retention)
    """Snapshots for a snapshot or snapshot-cleanup job; backups for a backup job."""
    local_retention: Retention = field(default_factory=lambda: Retention(retain=1))
    """A backup job's local snapshots (default: the newest one, the next backup's base)."""
    target: str | None = None
    concurrency: int = 1
    jitter: float = 0.0
    """Seconds."""
    skip_unchanged: bool = True
    selection: Selection = field(default_factory=Selection)
    labels: tuple[tuple[str, str], ...] = ()
    read_data: bool = False

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


# -- parsing ---------------------------------------------------------------------------------

_FIELDS = (
    "name",
    "task",
    "cron",
    "timezone",
    "retain",
    "keep",
    "retainLocal",
    "keepLocal",
    "target",
    "concurrency",
    "jitter",
    "skipUnchanged",
    "volumes",
    "selector",
    "groups",
    "labels",
    "readData",
)
_KEEP_FIELDS = ("hourly", "daily", "weekly", "monthly", "yearly")


class _Fields:
    """Typed access to one job's mapping; every error names the job and the field."""

    def __init__(self, raw: Mapping[str, Any], job: str, prefix: str = "") -> None:
        self.raw = raw
        self.job = job
        self.prefix = prefix
        """How the mapping's keys are shown (`keep.` for the keys of `keep`)."""

    def fail(self, message: str) -> InvalidArgument:
        return InvalidArgument(f"job {self.job!r}: {message}")

    def has(self, key: str) -> bool:
        return key in self.raw and self.raw[key] is not None

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.raw.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{self.prefix}{key} must be a non-empty string, not {value!r}")
        return value.strip()

    def count(self, key: str, default: int = 0, *, minimum: int = 0) -> int:
        value = self.raw.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{self.prefix}{key} must be a whole number, not {value!r}")
        if value < minimum:
            raise self.fail(f"{self.prefix}{key} must be {minimum} or more, not {value}")
        if value > MAX_COUNT:
            raise self.fail(f"{self.prefix}{key} must be {MAX_COUNT} or less, not {value}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(f"{self.prefix}{key} must be true or false, not {value!r}")
        return value

    def mapping(self, key: str) -> Mapping[str, Any]:
        value = self.raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(f"{self.prefix}{key} must be a mapping, not {value!r}")
        return value

    def strings(self, key: str, check: Callable[[str], str] | None = None) -> tuple[str, ...]:
        value = self.raw.get(key)
        if value is None:
            return ()
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise self.fail(f"{self.prefix}{key} must be a list of names, not {value!r}")
        result: list[str] = []
        for item in value:
            if not isinstance(item, str) or not item.strip():
                raise self.fail(f"{self.prefix}{key} must be a list of names, not {value!r}")
            result.append(self.checked(check, item.strip()) if check else item.strip())
        return tuple(dict.fromkeys(result))

    def duration(self, key: str) -> float:
        value = self.raw.get(key)
        if value is None:
            return 0.0
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(f"{self.prefix}{key} must be a duration such as 5m, not {value!r}")
        return self.checked(lambda text: parse_duration(text, allow_zero=True), str(value))

    def checked(self, check: Callable[[str], _T], value: str) -> _T:
        try:
            return check(value)
        except InvalidArgument as e:
            raise self.fail(e.message) from e


def _job_name(raw: Mapping[str, Any], index: int) -> str:
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgument(f"job #{index + 1}: name is required (a short name, e.g. nightly)")
    name = validate_name("job", name.strip())
    if len(name) > JOB_NAME_MAX:
        raise InvalidArgument(f"job {name[:20]!r}...: a job name is at most {JOB_NAME_MAX} long")
    return name


def _unknown_keys(f: _Fields, keys: Sequence[str], known: Sequence[str], where: str) -> None:
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise f.fail(f"unknown field {where + unknown[0]!r} (known: {', '.join(known)})")


def _task(f: _Fields) -> Task:
    text = f.text("task")
    if text is None:
        raise f.fail(f"task is required: one of {', '.join(t.value for t in Task)}")
    try:
        return Task(text)
    except ValueError:
        raise f.fail(
            f"unknown task {text!r}: use one of {', '.join(t.value for t in Task)}"
        ) from None


def check_cron(expression: str) -> str:
    """`expression` if it is a valid 5-field cron expression, else InvalidArgument."""
    fields = expression.split()
    if len(fields) != 5:
        raise InvalidArgument(
            f"cron {expression!r} must have 5 fields: minute hour day-of-month month "
            "day-of-week (e.g. '0 2 * * *' for 02:00 every day)"
        )
    if not croniter.is_valid(" ".join(fields)):
        raise InvalidArgument(f"cron {expression!r} is not a valid cron expression")
    try:
        croniter(" ".join(fields), datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise InvalidArgument(f"cron {expression!r} never matches a date") from None
    return " ".join(fields)


def check_timezone(name: str) -> str:
    """`name` if it is a known IANA time zone, else InvalidArgument."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(
            f"unknown time zone {name!r}: use an IANA name such as UTC or Europe/Berlin"
        ) from None
    return name


def _keep(f: _Fields, key: str) -> Keep:
    raw = f.mapping(key)
    _unknown_keys(f, list(raw), _KEEP_FIELDS, f"{key}.")
    sub = _Fields(raw, f.job, prefix=f"{key}.")
    return Keep(*(sub.count(name) for name in _KEEP_FIELDS))


def _retention(f: _Fields, retain_key: str, keep_key: str) -> Retention:
    return Retention(f.count(retain_key), _keep(f, keep_key))


def _selection(f: _Fields) -> Selection:
    selector = f.mapping("selector")
    _unknown_keys(f, list(selector), ("matchLabels",), "selector.")
    match = _Fields(selector, f.job, prefix="selector.").mapping("matchLabels")
    labels = _labels(f, match, "selector.matchLabels")
    return Selection(
        volumes=f.strings("volumes", lambda v: validate_name("volume", v)),
        match_labels=labels,
        groups=f.strings("groups", lambda g: validate_name("group", g)),
    )


def _labels(f: _Fields, raw: Mapping[str, Any], key: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for name, value in raw.items():
        if not isinstance(name, str) or not isinstance(value, str | int | float | bool):
            raise f.fail(f"{key} must map label names to values, not {name!r}: {value!r}")
        text = str(value).lower() if isinstance(value, bool) else str(value)
        pairs.append(
            (
                f.checked(check_label_key, name),
                f.checked(partial(check_label_value, name), text),
            )
        )
    return tuple(sorted(pairs))


def _check_shape(f: _Fields, spec: JobSpec) -> None:
    task = spec.task
    if task.needs_target and spec.target is None:
        raise f.fail(f"a {task} job needs target: the backup target's name")
    if not task.needs_target and spec.target is not None:
        raise f.fail(f"target applies to backup, prune and check jobs, not to a {task} job")
    if task.per_volume and spec.selection.empty():
        raise f.fail(
            "selects no volume: set volumes, selector or groups "
            f"(groups: [{DEFAULT_GROUP}] selects every volume that names no group)"
        )
    if not task.per_volume and not spec.selection.empty():
        raise f.fail(f"a {task} job works on its target: volumes, selector, groups do not apply")
    if spec.read_data and task is not Task.CHECK:
        raise f.fail("readData applies to check jobs only")
    if spec.labels and not task.creates:
        raise f.fail("labels apply to snapshot and backup jobs only")
    if not task.creates and f.has("skipUnchanged"):
        raise f.fail("skipUnchanged applies to snapshot and backup jobs only")


def _check_retention(f: _Fields, spec: JobSpec) -> None:
    task = spec.task
    if not task.retains:
        for key in ("retain", "keep", "retainLocal", "keepLocal"):
            if f.has(key):
                raise f.fail(f"{key} applies to snapshot, backup and snapshot-cleanup jobs only")
        return
    if task is not Task.BACKUP:
        for key in ("retainLocal", "keepLocal"):
            if f.has(key):
                raise f.fail(f"{key} applies to backup jobs only (use retain/keep)")
    if spec.retention.keeps_nothing():
        what = "backups" if task is Task.BACKUP else "snapshots"
        raise f.fail(f"keeps no {what}: set retain to 1 or more, or keep (e.g. keep: {{daily: 7}})")


def parse_job(raw: object, index: int = 0) -> JobSpec:
    """One job definition (a mapping with the CRD's camelCase fields), checked."""
    if not isinstance(raw, Mapping):
        raise InvalidArgument(f"job #{index + 1} must be a mapping of fields, not {raw!r}")
    name = _job_name(raw, index)
    f = _Fields(raw, name)
    _unknown_keys(f, [str(k) for k in raw], _FIELDS, "")
    task = _task(f)
    cron_text = f.text("cron")
    if cron_text is None:
        raise f.fail("cron is required: 5 fields, e.g. '0 2 * * *' for 02:00 every day")
    cron = f.checked(check_cron, cron_text)
    timezone = f.checked(check_timezone, f.text("timezone", "UTC") or "UTC")
    spec = JobSpec(
        name=name,
        task=task,
        cron=cron,
        timezone=timezone,
        retention=_retention(f, "retain", "keep"),
        local_retention=(
            _retention(f, "retainLocal", "keepLocal")
            if f.has("retainLocal") or f.has("keepLocal")
            else Retention(retain=1)
        ),
        target=_target(f),
        concurrency=_concurrency(f),
        jitter=f.duration("jitter"),
        skip_unchanged=f.flag("skipUnchanged", True),
        selection=_selection(f),
        labels=_labels(f, f.mapping("labels"), "labels"),
        read_data=f.flag("readData", False),
    )
    _check_shape(f, spec)
    _check_retention(f, spec)
    return spec


def _target(f: _Fields) -> str | None:
    name = f.text("target")
    return None if name is None else f.checked(lambda t: validate_name("target", t), name)


def _concurrency(f: _Fields) -> int:
    value = f.count("concurrency", 1)
    if value == 0:
        raise f.fail("concurrency must be 1 or more (the volumes the job works on at once)")
    if value > MAX_CONCURRENCY:
        raise f.fail(f"concurrency must be {MAX_CONCURRENCY} or less, not {value}")
    return value


def parse_jobs(document: object) -> list[JobSpec]:
    """The jobs of a document `{jobs: [...]}` (or a bare list), checked; names are unique."""
    if isinstance(document, Mapping):
        extra = [str(k) for k in document if k != "jobs"]
        if extra:
            raise InvalidArgument(f"unknown top-level field {extra[0]!r}: the file holds `jobs:`")
        document = document.get("jobs")
    if document is None:
        return []
    if isinstance(document, str | bytes) or not isinstance(document, Sequence):
        raise InvalidArgument("`jobs` must be a list of job definitions")
    jobs = [parse_job(raw, i) for i, raw in enumerate(document)]
    seen: set[str] = set()
    for job in jobs:
        if job.name in seen:
            raise InvalidArgument(f"job {job.name!r} is defined twice: job names are unique")
        seen.add(job.name)
    return jobs


DEFAULT_JOBS_FILE = Path("/etc/amber/jobs.yaml")
"""Where `amber job`, `amber schedule` and `amber dashboard` read the jobs unless told."""


def load_jobs_file(path: Path) -> list[JobSpec]:
    """The jobs of a YAML file (`jobs: [...]`, the RecurringJob spec fields); every problem is
    one line naming the file (InvalidArgument: exit 2)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InvalidArgument(f"job file {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"job file {path} cannot be read: {e}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "not YAML"
        raise InvalidArgument(f"job file {path}: invalid YAML{where}: {problem}") from None
    try:
        return parse_jobs(document)
    except InvalidArgument as e:
        raise InvalidArgument(f"{path}: {e.message}") from None


def find_job(jobs: Sequence[JobSpec], name: str, file: Path) -> JobSpec:
    """The job called `name` among the jobs of `file` (NotFound names the file and its jobs)."""
    for job in jobs:
        if job.name == name:
            return job
    known = ", ".join(j.name for j in jobs) or "none"
    raise NotFound(f"job {name!r} is not defined in {file} (jobs there: {known})")


# -- the schema, for the Kubernetes CRD ------------------------------------------------------

_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": MAX_COUNT}
_NAMES: dict[str, Any] = {"type": "array", "items": {"type": "string", "minLength": 1}}
_KEEP: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": dict.fromkeys(_KEEP_FIELDS, _COUNT),
}
_STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI v3 schema of one job's fields: the `spec` of the RecurringJob CRD.

    It catches what a schema can (types, the task names, unknown fields); `parse_job` checks
    the rest (cron syntax, time zones, which fields go with which task) with one-line messages.
    A fresh copy each call (no shared parts: YAML dumps it without anchors).
    """
    fresh: dict[str, Any] = json.loads(json.dumps(_schema()))  # deepcopy would keep the sharing
    return fresh


def _schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["task", "cron"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "maxLength": JOB_NAME_MAX},
            "task": {"type": "string", "enum": [t.value for t in Task]},
            "cron": {"type": "string", "minLength": 9},
            "timezone": {"type": "string", "default": "UTC"},
            "retain": _COUNT,
            "keep": _KEEP,
            "retainLocal": _COUNT,
            "keepLocal": _KEEP,
            "target": {"type": "string", "minLength": 1},
            "concurrency": {"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY},
            "jitter": {"type": "string"},
            "skipUnchanged": {"type": "boolean", "default": True},
            "volumes": _NAMES,
            "selector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"matchLabels": _STRING_MAP},
            },
            "groups": _NAMES,
            "labels": _STRING_MAP,
            "readData": {"type": "boolean", "default": False},
        },
    }
