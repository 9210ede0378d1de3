"""The next/last-run rule every edge shows (`amber.jobs.status`), on a real job database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from amber.jobs.records import Records, RunOutcome, RunRecord
from amber.jobs.spec import parse_job
from amber.jobs.status import job_status

HOURLY = parse_job(
    {"name": "hourly", "task": "snapshot", "cron": "0 * * * *", "retain": 2, "groups": ["default"]}
)
NOW = datetime(2026, 3, 1, 10, 20, tzinfo=UTC)


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Records]:
    opened = Records(tmp_path / "jobs.db")
    try:
        yield opened
    finally:
        opened.close()


def test_a_job_that_never_ran_runs_at_its_next_slot_after_now(records: Records) -> None:
    status = job_status(records, HOURLY, NOW)
    assert status.next_run == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    assert status.last_run is None


def test_a_missed_slot_is_not_shown_as_the_next_run(records: Records) -> None:
    records.set_last_slot("hourly", datetime(2026, 3, 1, 7, 0, tzinfo=UTC).timestamp())
    assert job_status(records, HOURLY, NOW).next_run == datetime(2026, 3, 1, 11, tzinfo=UTC)


def test_a_slot_recorded_ahead_of_now_moves_the_next_run_after_it(records: Records) -> None:
    records.set_last_slot("hourly", datetime(2026, 3, 1, 11, 0, tzinfo=UTC).timestamp())
    assert job_status(records, HOURLY, NOW).next_run == datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_the_last_run_is_the_newest_record(records: Records) -> None:
    for subject, outcome in (("a", RunOutcome.OK), ("b", RunOutcome.FAILED)):
        start = NOW.timestamp()
        records.add(RunRecord("hourly", "snapshot", subject, start, start, start, outcome, "why"))
    last = job_status(records, HOURLY, NOW).last_run
    assert last is not None
    assert (last.subject, last.outcome, last.reason) == ("b", RunOutcome.FAILED, "why")
