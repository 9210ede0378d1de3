"""The scheduler over an injected clock and an in-memory executor: days in milliseconds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from amber.domain.errors import Busy
from amber.jobs.executor import ItemKind
from amber.jobs.records import Records, RunOutcome
from amber.jobs.runner import ELSEWHERE, Scheduler
from amber.jobs.spec import JobSpec, parse_job
from tests.jobs.fakes import FakeClock, FakeExecutor

START = datetime(2026, 6, 1, 0, 0, 30, tzinfo=UTC)


def spec(**fields: Any) -> JobSpec:
    raw: dict[str, Any] = {"name": "snap", "task": "snapshot", "cron": "0 * * * *", "retain": 3}
    raw.update(fields)
    if not ({"volumes", "groups", "selector"} & raw.keys()) and raw["task"] not in (
        "prune",
        "check",
    ):
        raw["groups"] = ["default"]
    return parse_job(raw)


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Records]:
    found = Records(tmp_path / "jobs.db")
    yield found
    found.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def drive(scheduler: Scheduler, clock: FakeClock, until: datetime) -> None:
    """What `serve` does, one wake-up at a time, without threads of its own."""
    scheduler.start()
    while True:
        wake = scheduler.next_wake()
        assert wake is not None
        if wake > until:
            clock.set(until)
            return
        clock.set(wake)
        scheduler.run_due()


def test_two_days_of_hourly_snapshots_keep_the_newest_three(
    records: Records, clock: FakeClock
) -> None:
    ex = FakeExecutor(clock)
    ex.add("a")
    ex.add("b", groups=["other"])
    scheduler = Scheduler(clock, ex, records, jobs=[spec()])
    drive(scheduler, clock, START + timedelta(days=2))
    assert [c for c in ex.calls if c[0] == "snapshot"] == [("snapshot", "a")] * 48
    kept = ex.items(spec(), "a", ItemKind.LOCAL)
    last_three = [f"snap-a-local-{START + timedelta(hours=h):%Y%m%dT%H0000}" for h in (46, 47, 48)]
    assert [i.item_id for i in kept] == last_three
    history = records.history("snap", limit=100)
    assert len(history) == 48
    assert all(r.outcome is RunOutcome.OK and r.subject == "a" for r in history)
    assert history[0].created == (last_three[-1],)
    assert history[0].deleted == (f"snap-a-local-{START + timedelta(hours=45):%Y%m%dT%H0000}",)


def test_missed_slots_during_downtime_run_once(records: Records, clock: FakeClock) -> None:
    ex = FakeExecutor(clock)
    ex.add("a")
    job = spec()
    first = Scheduler(clock, ex, records, jobs=[job])
    drive(first, clock, START + timedelta(hours=2))
    assert len(ex.calls) == 2
    clock.set(START + timedelta(days=3, hours=2, minutes=10))  # down for three days
    second = Scheduler(clock, ex, records, jobs=[job])
    second.start()
    assert [s.name for s, _ in second.due_now()] == ["snap"]
    done = second.run_due()
    assert [r.outcome for r in done] == [RunOutcome.OK]
    assert second.due_now() == []
    assert datetime.fromtimestamp(done[0].slot, UTC) == START.replace(second=0) + timedelta(
        days=3, hours=2
    )
    assert len([c for c in ex.calls if c[0] == "snapshot"]) == 3


def test_backup_job_keeps_local_and_remote_separately(records: Records, clock: FakeClock) -> None:
    ex = FakeExecutor(clock)
    ex.add("db")
    job = spec(
        name="nightly",
        task="backup",
        target="nas",
        retain=None,
        keep={"daily": 30},
        retainLocal=6,
        cron="0 */4 * * *",
    )
    drive(Scheduler(clock, ex, records, jobs=[job]), clock, START + timedelta(days=40))
    local = ex.items(job, "db", ItemKind.LOCAL)
    remote = ex.items(job, "db", ItemKind.REMOTE)
    assert len(local) == 6  # the six newest, 4 hours apart
    assert [i.created for i in local] == sorted(i.created for i in local)
    assert local[-1].created - local[0].created == 5 * 4 * 3600
    days = {datetime.fromtimestamp(i.created, UTC).date() for i in remote}
    assert len(remote) == 30  # one a day, the newest of each of the last 30 days
    assert len(days) == 30


def test_unchanged_volume_is_skipped_and_force_runs_it(records: Records, clock: FakeClock) -> None:
    ex = FakeExecutor(clock)
    for name in ("same", "written", "unknown"):
        ex.add(name)
    ex.changed = {"same": False, "written": True, "unknown": None}
    scheduler = Scheduler(clock, ex, records, jobs=[spec()])
    done = scheduler.run_job(spec(), clock.now())
    outcomes = {r.subject: (r.outcome, r.reason) for r in done}
    assert outcomes["same"] == (RunOutcome.SKIPPED, "unchanged since the job's last run")
    assert outcomes["written"][0] is RunOutcome.OK
    assert outcomes["unknown"][0] is RunOutcome.OK  # cannot tell: treated as changed
    assert ("snapshot", "same") not in ex.calls
    forced = scheduler.run_job(spec(), clock.now(), force=True)
    assert {r.subject: r.outcome for r in forced}["same"] is RunOutcome.OK
    assert scheduler.run_job(spec(skipUnchanged=False), clock.now())[0].outcome is RunOutcome.OK


def test_a_failing_volume_is_recorded_and_the_others_go_on(
    records: Records, clock: FakeClock
) -> None:
    ex = FakeExecutor(clock)
    ex.add("bad")
    ex.add("good")
    ex.failing = {"bad"}
    done = Scheduler(clock, ex, records).run_job(spec(), clock.now())
    assert [(r.subject, r.outcome) for r in done] == [
        ("bad", RunOutcome.FAILED),
        ("good", RunOutcome.OK),
    ]
    assert done[0].reason == "volume 'bad' is not reachable"
    assert records.history("snap")[0].outcome in (RunOutcome.OK, RunOutcome.FAILED)


@pytest.mark.parametrize(
    ("concurrency", "node_limit", "expected"), [(2, 5, 2), (4, 3, 3), (1, 4, 1)]
)
def test_concurrency_per_job_and_per_node(
    records: Records, clock: FakeClock, concurrency: int, node_limit: int, expected: int
) -> None:
    ex = FakeExecutor(clock)
    for i in range(8):
        ex.add(f"v{i}")
    ex.gate = threading.Event()  # every task holds its slots until the gate opens
    job = spec(concurrency=concurrency)
    scheduler = Scheduler(clock, ex, records, node_limit=node_limit)
    done: list[Any] = []
    runner = threading.Thread(target=lambda: done.extend(scheduler.run_job(job, START)))
    runner.start()
    with ex.moved:
        assert ex.moved.wait_for(lambda: ex.active == expected, timeout=30)
        # A limit that does not hold lets the next task in at once; this one holds.
        assert not ex.moved.wait_for(lambda: ex.active > expected, timeout=0.5)
    ex.gate.set()
    runner.join(60)
    assert len(done) == 8
    assert ex.max_active == expected


def test_selection_by_name_label_and_group(records: Records, clock: FakeClock) -> None:
    ex = FakeExecutor(clock)
    ex.add("named")
    ex.add("labelled", labels={"app": "web"})
    ex.add("grouped", groups=["gold"])
    ex.add("plain")
    ex.add("elsewhere", labels={"app": "db"}, groups=["silver"])
    job = spec(volumes=["named"], selector={"matchLabels": {"app": "web"}}, groups=["gold"])
    done = Scheduler(clock, ex, records).run_job(job, clock.now())
    assert [r.subject for r in done] == ["grouped", "labelled", "named"]
    job = spec(groups=["default"])
    done = Scheduler(clock, ex, records).run_job(job, clock.now())
    assert [r.subject for r in done] == ["labelled", "named", "plain"]


def test_target_tasks_and_trim(records: Records, clock: FakeClock) -> None:
    ex = FakeExecutor(clock)
    ex.add("mounted")
    ex.add("unmounted")
    scheduler = Scheduler(clock, ex, records)
    pruned = scheduler.run_job(spec(name="p", task="prune", target="nas", retain=None), START)
    assert [(r.subject, r.outcome, r.bytes) for r in pruned] == [("target:nas", RunOutcome.OK, 5)]
    checked = scheduler.run_job(spec(name="c", task="check", target="nas", retain=None), START)
    assert checked[0].subject == "target:nas"
    trimmed = scheduler.run_job(spec(name="t", task="trim", retain=None), START)
    assert [(r.subject, r.outcome) for r in trimmed] == [
        ("mounted", RunOutcome.OK),
        ("unmounted", RunOutcome.SKIPPED),
    ]
    assert trimmed[1].reason == "volume 'unmounted' is not mounted"


def test_jitter_starts_each_volume_after_its_offset(records: Records, clock: FakeClock) -> None:
    ex = FakeExecutor(clock)
    for i in range(5):
        ex.add(f"v{i}")
    job = spec(jitter="10m")
    done = Scheduler(clock, ex, records).run_job(job, START)
    from amber.jobs.schedule import jitter_offset

    for record in done:
        assert record.start >= START.timestamp() + jitter_offset(job, record.subject) - 1e-3
        assert record.start < START.timestamp() + 600


def test_run_now_ignores_jitter(records: Records, clock: FakeClock) -> None:
    ex = FakeExecutor(clock)
    for i in range(5):
        ex.add(f"v{i}")
    done = Scheduler(clock, ex, records).run_job(spec(jitter="10m"), START, now=True)
    assert {r.start for r in done} == {START.timestamp()}


def test_stop_starts_no_new_task(records: Records, clock: FakeClock) -> None:
    ex = FakeExecutor(clock)
    for i in range(3):
        ex.add(f"v{i}")
    scheduler = Scheduler(clock, ex, records)
    scheduler.stop.set()
    assert scheduler.run_job(spec(), START) == []
    assert ex.calls == []


def test_serve_runs_slots_in_order_and_returns_after_a_stop(
    records: Records, clock: FakeClock
) -> None:
    ex = FakeExecutor(clock)
    ex.add("a")
    seen: list[float] = []
    scheduler: Scheduler

    def on_record(record: Any) -> None:
        seen.append(record.slot)
        if len(seen) == 3:
            scheduler.request_stop()

    scheduler = Scheduler(clock, ex, records, jobs=[spec()], on_record=on_record)
    thread = threading.Thread(target=scheduler.serve)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    assert len(seen) >= 3
    assert seen == sorted(set(seen))  # each slot once, in order
    assert all(datetime.fromtimestamp(s, UTC).minute == 0 for s in seen)


def test_run_now_is_refused_while_the_job_runs(records: Records, clock: FakeClock) -> None:
    """One run of a job at a time (the rule `amber job run-now` and the dashboard share):
    refused while its run holds the job, allowed again once it ended."""
    ex = FakeExecutor(clock)
    ex.add("a")
    job = spec()
    scheduler = Scheduler(clock, ex, records, jobs=[job])
    with scheduler.claimed(job):
        assert scheduler.running(job.name)
        with pytest.raises(Busy, match="job 'snap' is already running"):
            scheduler.run_now(job)
        with pytest.raises(Busy):
            scheduler.claim(job)
    assert [c for c in ex.calls if c[0] == "snapshot"] == []
    done = scheduler.run_now(job)
    assert [(r.subject, r.outcome) for r in done] == [("a", RunOutcome.OK)]
    assert not scheduler.running(job.name)


def test_one_run_per_job_across_schedulers_sharing_the_records(
    records: Records, clock: FakeClock, tmp_path: Path
) -> None:
    """Two schedulers over the same job database (as two processes: each its own open of the
    records, so its own lock file descriptor): while one runs the job, the other's run-now is
    refused and its due slot is recorded skipped on each volume, and the schedule moves on."""
    ex = FakeExecutor(clock)
    ex.add("a")
    ex.add("b")
    job = spec()
    other_records = Records(records.path)
    try:
        here = Scheduler(clock, ex, records, jobs=[job])
        there = Scheduler(clock, ex, other_records, jobs=[job])
        there.start()
        clock.set(START + timedelta(hours=1))
        with here.claimed(job):
            with pytest.raises(Busy, match="job 'snap' is already running"):
                there.run_now(job)
            skipped = there.run_due()
        assert not there.running(job.name)
        assert [(r.subject, r.outcome, r.reason) for r in skipped] == [
            ("a", RunOutcome.SKIPPED, ELSEWHERE),
            ("b", RunOutcome.SKIPPED, ELSEWHERE),
        ]
        assert [c for c in ex.calls if c[0] == "snapshot"] == []
        assert there.due_now() == []  # the slot was taken (skipped), not retried at once
        done = there.run_now(job)  # released: the other runs it
        assert [(r.subject, r.outcome) for r in done] == [
            ("a", RunOutcome.OK),
            ("b", RunOutcome.OK),
        ]
    finally:
        other_records.close()


def test_a_claim_taken_ahead_is_used_by_run_now_and_released(
    records: Records, clock: FakeClock
) -> None:
    """The dashboard claims in the request (refused at once) and runs in a thread later."""
    ex = FakeExecutor(clock)
    ex.add("a")
    job = spec()
    scheduler = Scheduler(clock, ex, records, jobs=[job])
    claim = scheduler.claim(job)
    assert records.try_claim(job.name) is None  # held across processes too
    done = scheduler.run_now(job, claim=claim)
    assert [(r.subject, r.outcome) for r in done] == [("a", RunOutcome.OK)]
    claim.release()  # a second release does nothing
    again = records.try_claim(job.name)
    assert again is not None
    again.release()
