"""`amber schedule` and `amber job` as users run them: real subprocesses on a real pool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.runner import amber, amber_json

JOBS = """\
jobs:
  - name: snap
    task: snapshot
    cron: "0 3 * * *"
    timezone: Europe/Berlin
    retain: 2
    groups: [default]
"""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("jobs:\n  - name: x\n    task: snapshot\n    cron: '0 2 * *'\n", "must have 5 fields"),
        (
            "jobs:\n  - {name: x, task: snapshot, cron: '0 2 * * *', retain: 1, colour: red}\n",
            "unknown field 'colour'",
        ),
        (
            "jobs:\n  - {name: x, task: snapshot, cron: '0 2 * * *', timezone: Mars/Base,"
            " retain: 1, groups: [default]}\n",
            "unknown time zone 'Mars/Base'",
        ),
        ("jobs: [\n", "invalid YAML at line 2"),
        (None, "not found"),
    ],
)
def test_schedule_check_errors_are_one_line_exit_2(
    pool_dir: Path, tmp_path: Path, content: str | None, message: str
) -> None:
    file = tmp_path / "jobs.yaml"
    if content is not None:
        file.write_text(content)
    done = amber(pool_dir, "schedule", "check", str(file))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: ")
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_schedule_check_prints_next_runs(pool_dir: Path, tmp_path: Path) -> None:
    file = tmp_path / "jobs.yaml"
    file.write_text(JOBS)
    rows = amber_json(pool_dir, "schedule", "check", str(file), "--next", "2")
    assert [r["name"] for r in rows] == ["snap"]
    assert len(rows[0]["next_runs"]) == 2
    assert all("T03:00:00+0" in t for t in rows[0]["next_runs"])  # 03:00 in Berlin


def test_run_now_creates_a_snapshot_and_history_shows_it(pool_dir: Path, tmp_path: Path) -> None:
    file = tmp_path / "jobs.yaml"
    file.write_text(JOBS)
    for name in ("a", "b"):
        assert amber(pool_dir, "volume", "create", name, "--size", "8Mi", "--block").returncode == 0
    labelled = amber_json(pool_dir, "volume", "label", "b", "group=other")
    assert labelled["labels"] == {"group": "other"}
    done = amber(pool_dir, "job", "run-now", "snap", "--file", str(file))
    assert done.returncode == 0, done.stderr
    assert " snap snapshot a ok created snap-a-" in done.stdout
    snapshots = [s["name"] for s in amber_json(pool_dir, "snapshot", "list")]
    assert len(snapshots) == 1
    assert snapshots[0].startswith("snap-a-")  # b is in group `other`, not `default`
    runs = amber_json(pool_dir, "job", "history", "snap")
    assert [(r["subject"], r["outcome"], r["created"]) for r in runs] == [("a", "ok", snapshots)]
    # Nothing written since: skipped, unless forced.
    again = amber_json(pool_dir, "job", "run-now", "snap", "--file", str(file))
    assert [(r["outcome"], r["reason"]) for r in again] == [
        ("skipped", "unchanged since the job's last run")
    ]
    forced = amber_json(pool_dir, "job", "run-now", "snap", "--file", str(file), "--force")
    assert [r["outcome"] for r in forced] == ["ok"]
    listed = amber_json(pool_dir, "job", "list", "--file", str(file))
    assert listed[0]["name"] == "snap"
    assert listed[0]["last_run"]["outcome"] == "ok"
    volumes = {v["name"]: v["labels"] for v in amber_json(pool_dir, "volume", "list")}
    assert volumes == {"a": {}, "b": {"group": "other"}}


def test_run_now_of_an_unknown_job(pool_dir: Path, tmp_path: Path) -> None:
    file = tmp_path / "jobs.yaml"
    file.write_text(JOBS)
    done = amber(pool_dir, "job", "run-now", "nope", "--file", str(file))
    assert done.returncode == 3
    assert done.stderr == f"error: job 'nope' is not defined in {file} (jobs there: snap)\n"


def test_volume_label_errors(pool_dir: Path) -> None:
    assert amber(pool_dir, "volume", "create", "a", "--size", "8Mi", "--block").returncode == 0
    for args, message in (
        (("bad key=1",), "invalid label key"),
        (("group=a,b c",), "invalid group name"),
        (("k=1", "k-"), "both set and removed"),
    ):
        done = amber(pool_dir, "volume", "label", "a", *args)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert done.stderr.count("\n") == 1
    assert amber_json(pool_dir, "volume", "label", "a", "k=1")["labels"] == {"k": "1"}
    assert amber_json(pool_dir, "volume", "label", "a", "k-")["labels"] == {}


def test_schedule_run_stops_on_sigterm(pool_dir: Path, tmp_path: Path) -> None:
    file = tmp_path / "jobs.yaml"
    file.write_text(JOBS)
    process = subprocess.Popen(
        [sys.executable, "-m", "amber", "--pool", str(pool_dir), "schedule", "run", str(file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # printed once the scheduler is up
        assert first.startswith(f"scheduling 1 job(s) from {file}; next run "), first
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out == "stopped\n"
    assert err == "SIGTERM: finishing running tasks\n"


def test_schedule_run_catches_up_a_missed_slot_once(pool_dir: Path, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from amber.jobs.records import Records

    file = tmp_path / "jobs.yaml"
    file.write_text(JOBS)
    assert amber(pool_dir, "volume", "create", "a", "--size", "8Mi", "--block").returncode == 0
    records = Records.in_pool(pool_dir)  # the scheduler last ran three days ago
    seeded = (datetime.now(UTC) - timedelta(days=3)).timestamp()
    records.set_last_slot("snap", seeded)
    records.close()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "amber",
            "--pool",
            str(pool_dir),
            "-o",
            "json",
            "schedule",
            "run",
            str(file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("scheduling 1 job(s)")
        run = json.loads(process.stdout.readline())  # the one catch-up run
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert (run["job"], run["subject"], run["outcome"]) == ("snap", "a", "ok")
    assert out == "stopped\n"  # no second run for the other missed slots
    assert len(amber_json(pool_dir, "job", "history", "snap")) == 1
    records = Records.in_pool(pool_dir)
    last = records.last_slot("snap")
    records.close()
    assert last is not None
    assert last == run["slot"] > seeded + 2 * 86400  # the latest missed slot is done
