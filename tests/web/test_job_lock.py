"""One run of a job at a time across processes on one pool: a run held (at a FIFO failpoint) in
one `amber dashboard` refuses `amber job run-now` (one line, exit 8), another dashboard's Run
now (409) and a due slot of `amber schedule run` (recorded skipped, as such); a killed holder
(kill -9) frees the job at once: the kernel drops its lock with the process."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amber.jobs.records import DB_NAME
from amber.jobs.runner import ELSEWHERE
from tests.cli.runner import amber
from tests.web.conftest import Dashboard, start_dashboard, stop

REFUSED = "job 'hourly' is already running: wait for its run to end"


def _run_job(dashboard: Dashboard) -> tuple[int, dict[str, Any]]:
    """POST the Run now action of job `hourly` as the page does (CSRF token, same origin)."""
    status, headers, _ = dashboard.request("GET", "/jobs")
    assert status == 200
    found = re.search(r"amber_csrf=([^;]+);", headers["set-cookie"])
    assert found, headers["set-cookie"]
    csrf = found.group(1)
    sent = {"Origin": f"http://{dashboard.netloc}", "Cookie": f"amber_csrf={csrf}"}
    status, _, body = dashboard.request("POST", "/actions/run-job", f"job=hourly&csrf={csrf}", sent)
    answer: dict[str, Any] = json.loads(body)
    return status, answer


@pytest.fixture
def holder(pool_dir: Path, targets: Path, jobs_file: Path, tmp_path: Path) -> Iterator[Dashboard]:
    """A dashboard whose Run now of `hourly` (its operation 1) is held in its snapshot until
    the FIFO `tmp_path/release` is opened for writing; the run holds the job when this yields."""
    os.mkfifo(tmp_path / "release")
    pause = {"AMBER_TEST_PAUSE_AT": f"snapshot.create.journaled:{tmp_path / 'release'}"}
    running = start_dashboard(pool_dir, targets, "--jobs-file", str(jobs_file), env=pause)
    try:
        running.amber_json("volume", "create", "db", "--size", "32Mi", "--block")
        status, answer = _run_job(running)  # the claim is taken before the answer
        assert (status, answer["operation"]["id"]) == (200, 1), answer
        yield running
    finally:
        stop(running)


def _snapshots(pool: Path) -> list[str]:
    done = amber(pool, "-o", "json", "snapshot", "list")
    assert done.returncode == 0, done.stderr
    return [s["name"] for s in json.loads(done.stdout) if s["name"].startswith("hourly-db-")]


def _schedule_one_slot(pool: Path, jobs_file: Path) -> list[dict[str, Any]]:
    """`amber schedule run` with hourly's last slot two hours ago (one catch-up slot is due at
    once): the records it logs for that slot; then SIGTERM."""
    with contextlib.closing(sqlite3.connect(pool / DB_NAME)) as db, db:
        db.execute(
            "INSERT INTO slots (job, last_slot) VALUES ('hourly', ?)"
            " ON CONFLICT(job) DO UPDATE SET last_slot = excluded.last_slot",
            (time.time() - 7200,),
        )
    command = [sys.executable, "-m", "amber", "--pool", str(pool), "-o", "json"]
    process = subprocess.Popen(
        [*command, "schedule", "run", str(jobs_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("scheduling 1 job(s)"), first + process.stderr.read()
        logged = [json.loads(process.stdout.readline())]  # the slot's one subject, db
    finally:
        process.terminate()
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return logged


def test_a_held_run_refuses_runs_of_the_job_from_other_processes(
    holder: Dashboard, pool_dir: Path, targets: Path, jobs_file: Path, tmp_path: Path
) -> None:
    refused = amber(pool_dir, "job", "run-now", "hourly", "--file", str(jobs_file))
    assert refused.returncode == 8, refused.stderr
    assert refused.stderr == f"error: {REFUSED}\n"

    other = start_dashboard(pool_dir, targets, "--jobs-file", str(jobs_file))
    try:
        shown, _, page = other.request("GET", "/jobs")
        status, answer = _run_job(other)
    finally:
        stop(other)
    assert (status, answer["error"]) == (409, REFUSED), answer
    # The other dashboard shows the run it does not own as running.
    assert shown == 200
    row = re.search(r'<tr data-job="hourly">.*?</tr>', page, re.S)
    assert row, page
    assert '<span class="running">running</span>' in row.group(0), row.group(0)

    logged = _schedule_one_slot(pool_dir, jobs_file)
    assert [(r["subject"], r["outcome"], r["reason"]) for r in logged] == [
        ("db", "skipped", ELSEWHERE)
    ]
    assert _snapshots(pool_dir) == []

    with open(tmp_path / "release", "wb"):
        pass  # the held run goes on and ends
    assert _wait_operation(holder, 1) == "succeeded"
    assert len(_snapshots(pool_dir)) == 1
    history = json.loads(amber(pool_dir, "-o", "json", "job", "history", "hourly").stdout)
    assert sorted((r["outcome"], r["reason"]) for r in history) == [
        ("ok", ""),
        ("skipped", ELSEWHERE),
    ]


def _wait_operation(dashboard: Dashboard, op_id: int) -> str:
    """The state of a dashboard operation once it is no longer running."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, _, body = dashboard.request("GET", f"/api/operations/{op_id}")
        assert status == 200, body
        state: str = json.loads(body)["state"]
        if state != "running":
            return state
        time.sleep(0.05)
    pytest.fail(f"operation {op_id} still runs after 120 s")


def test_a_killed_holder_frees_the_job(holder: Dashboard, pool_dir: Path, jobs_file: Path) -> None:
    refused = amber(pool_dir, "job", "run-now", "hourly", "--file", str(jobs_file))
    assert refused.returncode == 8, refused.stderr
    holder.process.kill()  # kill -9, inside the held run
    holder.process.communicate(timeout=30)
    done = amber(pool_dir, "-o", "json", "job", "run-now", "hourly", "--file", str(jobs_file))
    assert done.returncode == 0, done.stderr
    assert [(r["subject"], r["outcome"]) for r in json.loads(done.stdout)] == [("db", "ok")]
    assert len(_snapshots(pool_dir)) == 1
