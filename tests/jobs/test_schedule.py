"""Cron in time zones, DST, the missed-run rule and jitter (pure: no clock, no sleep)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from amber.domain.errors import InvalidArgument
from amber.jobs.schedule import due, jitter_offset, next_run, next_runs
from amber.jobs.spec import JobSpec, parse_job


def spec(cron: str, tz: str = "UTC", **extra: Any) -> JobSpec:
    raw = {"name": "j", "task": "snapshot", "cron": cron, "timezone": tz, "retain": 3}
    raw.update({"groups": ["default"], **extra})
    return parse_job(raw)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_feb_29_only_in_leap_years() -> None:
    runs = next_runs(spec("0 0 29 2 *"), utc(2025, 1, 1), 3)
    assert runs == [utc(2028, 2, 29), utc(2032, 2, 29), utc(2036, 2, 29)]


def test_step_seven_restarts_each_hour() -> None:
    runs = next_runs(spec("*/7 * * * *"), utc(2026, 1, 1, 0, 50), 3)
    assert runs == [utc(2026, 1, 1, 0, 56), utc(2026, 1, 1, 1, 0), utc(2026, 1, 1, 1, 7)]


def test_day_of_month_or_day_of_week() -> None:
    # Classic cron: with both restricted, either one matching is enough.
    runs = next_runs(spec("0 0 13 * 5"), utc(2026, 2, 1), 4)
    days = [(r.month, r.day) for r in runs]
    assert days == [(2, 6), (2, 13), (2, 20), (2, 27)]  # Fridays, and the 13th (a Friday too)
    runs = next_runs(spec("0 0 13 * 1"), utc(2026, 3, 10), 3)
    assert [(r.month, r.day) for r in runs] == [(3, 13), (3, 16), (3, 23)]


def test_result_is_strictly_after() -> None:
    s = spec("0 2 * * *")
    assert next_run(s, utc(2026, 1, 1, 2)) == utc(2026, 1, 2, 2)


# (zone, the spring-forward day, its missing wall time, the fall-back day, its repeated time)
DST_DAYS = [
    ("Europe/Berlin", (2026, 3, 29), "30 2", (2026, 10, 25), "30 2"),
    ("America/New_York", (2026, 3, 8), "30 2", (2026, 11, 1), "30 1"),
]


def _runs_on(s: JobSpec, day: tuple[int, int, int]) -> list[datetime]:
    start = utc(*day) - timedelta(days=2)
    return [
        r for r in next_runs(s, start, 6) if r.astimezone(s.zone).date() == datetime(*day).date()
    ]


@pytest.mark.parametrize(("tz", "spring", "gap", "fall", "twice"), DST_DAYS)
def test_daily_job_runs_once_on_both_dst_days(
    tz: str, spring: tuple[int, int, int], gap: str, fall: tuple[int, int, int], twice: str
) -> None:
    # Spring forward: the wall time does not exist; the job runs once, an hour later by the
    # clock (03:30 summer time), the instant 02:30 winter time would have been.
    runs = _runs_on(spec(f"{gap} * * *", tz), spring)
    assert len(runs) == 1, runs
    assert runs[0].astimezone(ZoneInfo(tz)).strftime("%H:%M") == "03:30"
    # Fall back: the wall time happens twice; the job runs once, at the first (summer time).
    runs = _runs_on(spec(f"{twice} * * *", tz), fall)
    assert len(runs) == 1, runs
    assert runs[0].astimezone(ZoneInfo(tz)).dst()


def test_hourly_job_runs_every_real_hour_across_fall_back() -> None:
    s = spec("0 * * * *", "Europe/Berlin")
    runs = next_runs(s, utc(2026, 10, 24, 22, 30), 6)
    gaps = {b - a for a, b in itertools.pairwise(runs)}
    assert gaps == {timedelta(hours=1)}


def test_hourly_job_across_spring_forward_never_repeats() -> None:
    s = spec("30 * * * *", "America/New_York")
    runs = next_runs(s, utc(2026, 3, 8, 4), 5)
    assert len(set(runs)) == 5
    assert runs == sorted(runs)
    assert {b - a for a, b in itertools.pairwise(runs)} == {timedelta(hours=1)}


def test_missed_runs_after_three_days_run_once() -> None:
    s = spec("0 * * * *")
    last = utc(2026, 5, 1, 10)
    now = utc(2026, 5, 4, 10, 20)
    slot = due(s, last, now)
    assert slot == utc(2026, 5, 4, 10)  # the latest missed slot: one run
    assert due(s, slot, now) is None  # and nothing more is due after it
    assert due(s, last, utc(2026, 5, 1, 10, 59)) is None
    assert due(s, None, now) is None  # a new job waits for its first slot


def test_jitter_is_deterministic_and_bounded() -> None:
    s = spec("0 2 * * *", jitter="10m")
    offsets = {v: jitter_offset(s, v) for v in (f"vol{i}" for i in range(200))}
    assert all(0 <= o < 600 for o in offsets.values())
    assert offsets == {v: jitter_offset(s, v) for v in offsets}
    assert len(set(offsets.values())) > 150  # spread, not one value
    assert max(offsets.values()) > 500
    assert min(offsets.values()) < 100
    assert jitter_offset(spec("0 2 * * *"), "vol0") == 0


def test_cron_that_never_matches_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="never matches a date"):
        spec("0 0 31 2 *")
