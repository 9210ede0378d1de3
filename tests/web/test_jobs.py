"""The dashboard's recurring jobs and `/metrics`, in headless Chromium over a real pool: the jobs
page shows the jobs file with next and last run, Run now takes the snapshot in the pool and
records the run, a running job is refused, a bad jobs file is one line on the page; `/metrics`
carries the pool's and volumes' series with the pool's values, behind the token when reachable
from other machines."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.common.by import By

from tests.web.conftest import Dashboard, start_dashboard, stop
from tests.web.pages import Browser

TOKEN = "s3cr3t-dashboard-token-0123456789"


@pytest.fixture
def with_jobs(pool_dir: Path, targets: Path, jobs_file: Path) -> Iterator[Dashboard]:
    running = start_dashboard(pool_dir, targets, "--jobs-file", str(jobs_file))
    running.amber_json("volume", "create", "db", "--size", "32Mi", "--block")
    yield running
    stop(running)


def _when(iso: str) -> str:
    """The page's format of a time `amber job list -o json` gives."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def _job_snapshots(dashboard: Dashboard) -> list[str]:
    names = [s["name"] for s in dashboard.amber_json("snapshot", "list")]
    return [n for n in names if n.startswith("hourly-db-")]


def _wait_operation(page: Browser, state: str) -> str:
    page.open("/operations")
    page.wait().until(lambda _: state in page.text("#operations tbody tr .state"))
    return page.text("#operations tbody tr .result")


def test_the_jobs_page_shows_the_job_with_its_next_run(
    browser: Any, with_jobs: Dashboard, jobs_file: Path
) -> None:
    page = Browser(browser, with_jobs)
    listed = with_jobs.amber_json("job", "list", "--file", str(jobs_file))
    page.open("/jobs")
    row = page.text('#jobs tr[data-job="hourly"]')
    for part in ("snapshot", "0 * * * * UTC", "volumes db", "last 3"):
        assert part in row, row
    assert page.text('#jobs tr[data-job="hourly"] .next-run') == _when(listed[0]["next_run"])
    assert page.text('#jobs tr[data-job="hourly"] .last-run') == "-"
    page.open("/volumes")
    assert "hourly (0 * * * * UTC)" in page.text('#volumes tr[data-volume="db"]')


def test_run_now_from_the_page_snapshots_the_volume_and_records_the_run(
    browser: Any, with_jobs: Dashboard
) -> None:
    page = Browser(browser, with_jobs)
    page.open("/jobs")
    message = page.act('#jobs tr[data-job="hourly"]', "run-job")
    # The page shows "started", or already the result when the run ended before it was read.
    assert message.startswith(("started: run job hourly", "job hourly: 1 ok")), message
    result = _wait_operation(page, "succeeded")
    made = _job_snapshots(with_jobs)
    assert len(made) == 1, made
    assert result == f"job hourly: 1 ok; created {made[0]}"
    history = with_jobs.amber_json("job", "history", "hourly")
    assert [(r["subject"], r["outcome"], r["created"]) for r in history] == [
        ("db", "ok", [made[0]])
    ]
    page.open("/jobs")
    assert page.text('#jobs tr[data-job="hourly"] .outcome') == "ok"
    samples = _samples(with_jobs.request("GET", "/metrics")[2])
    job = (("recurring_job", "hourly"),)
    assert samples[("amber_job_runs_total", job)] == 1
    assert samples[("amber_job_failures_total", job)] == 0
    assert "(db)" in page.text('#jobs tr[data-job="hourly"] .last-run')


def test_a_running_job_is_refused(
    browser: Any, pool_dir: Path, targets: Path, jobs_file: Path, tmp_path: Path
) -> None:
    """The first run pauses in its snapshot (a FIFO, not a sleep); Run now again is refused
    with one line; released, the first run ends and made the only snapshot."""
    fifo = tmp_path / "release"
    os.mkfifo(fifo)
    dashboard = start_dashboard(
        pool_dir,
        targets,
        "--jobs-file",
        str(jobs_file),
        env={"AMBER_TEST_PAUSE_AT": f"snapshot.create.journaled:{fifo}"},
    )
    try:
        dashboard.amber_json("volume", "create", "db", "--size", "32Mi", "--block")
        page = Browser(browser, dashboard)
        page.open("/jobs")
        assert page.act('#jobs tr[data-job="hourly"]', "run-job").startswith("started:")
        page.open("/jobs")
        page.wait().until(lambda _: page.text('#jobs tr[data-job="hourly"] .outcome') == "running")
        message = page.act('#jobs tr[data-job="hourly"]', "run-job")
        assert message == "job 'hourly' is already running: wait for its run to end"
        assert page.flash_is_error()
        page.console_errors()  # the browser logs the refused request (409): expected here
        running = _samples(dashboard.request("GET", "/metrics")[2])
        assert running[("amber_operations_in_flight", (("kind", "job"),))] == 1
        with open(fifo, "wb"):
            pass  # release the paused run
        _wait_operation(page, "succeeded")
        assert len(_job_snapshots(dashboard)) == 1
        assert len(dashboard.amber_json("job", "history", "hourly")) == 1
    finally:
        stop(dashboard)


def test_a_bad_jobs_file_is_one_line_on_the_page(
    browser: Any, with_jobs: Dashboard, jobs_file: Path
) -> None:
    jobs_file.write_text("jobs:\n  - name: [broken\n")
    status, _, _ = with_jobs.request("GET", "/jobs")
    assert status == 200
    page = Browser(browser, with_jobs)
    page.open("/jobs")
    error = page.text("#jobs-error")
    assert error.startswith(f"job file {jobs_file}: invalid YAML at line"), error
    assert "\n" not in error
    assert not page.driver.find_elements(By.CSS_SELECTOR, "#jobs")
    page.open("/volumes")  # the schedule column does without the jobs
    assert "db" in page.text('#volumes tr[data-volume="db"]')
    page.open("/jobs")
    assert not page.driver.find_elements(By.CSS_SELECTOR, 'form[data-action="run-job"]')


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_of_the_dashboard_carry_the_pools_values(with_jobs: Dashboard) -> None:
    with_jobs.amber_json("snapshot", "create", "db", "s1")
    status, headers, text = with_jobs.request("GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = _samples(text)
    pool = with_jobs.amber_json("pool", "status")
    assert samples[("amber_pool_size_bytes", ())] == pool["size"]
    assert samples[("amber_pool_provisioned_bytes", ())] == pool["provisioned"]
    assert samples[("amber_pool_volumes", ())] == pool["volumes"] == 1
    assert samples[("amber_pool_snapshots", ())] == pool["snapshots"] == 1
    volume = (("mode", "block"), ("volume", "db"))
    assert samples[("amber_volume_capacity_bytes", volume)] == 32 << 20
    assert samples[("amber_volume_condition_abnormal", volume)] == 0
    # The target's series come from the background prober: wait for its first probe.
    deadline = time.monotonic() + 60
    while ("amber_target_up", (("target", "t"),)) not in samples:
        assert time.monotonic() < deadline, "the target was never probed"
        samples = _samples(with_jobs.request("GET", "/metrics")[2])
    assert samples[("amber_target_up", (("target", "t"),))] == 1
    _, headers, _ = with_jobs.request(
        "GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert headers["content-type"].startswith("application/openmetrics-text")


def test_metrics_need_the_token_on_a_reachable_bind(
    pool_dir: Path, targets: Path, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    running = start_dashboard(
        pool_dir, targets, "--address", "0.0.0.0:0", "--token-file", str(token)
    )
    try:
        status, headers, text = running.request("GET", "/metrics")
        assert (status, headers.get("www-authenticate")) == (401, "Bearer")
        assert "amber_" not in text
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        status, _, text = running.request("GET", "/metrics", headers=bearer)
        assert status == 200
        assert "amber_pool_size_bytes" in text
    finally:
        stop(running)


def test_a_failed_run_shows_its_reason(
    browser: Any, pool_dir: Path, targets: Path, tmp_path: Path
) -> None:
    """A backup job to a target the targets file does not have: the operation fails with the
    volume's reason, and the jobs page shows the run failed and why."""
    jobs = tmp_path / "backup-jobs.yaml"
    jobs.write_text(
        "jobs:\n  - {name: offsite, task: backup, cron: '0 3 * * *', target: gone, "
        "retain: 2, volumes: [db]}\n"
    )
    dashboard = start_dashboard(pool_dir, targets, "--jobs-file", str(jobs))
    try:
        dashboard.amber_json("volume", "create", "db", "--size", "32Mi", "--block")
        page = Browser(browser, dashboard)
        page.open("/jobs")
        message = page.act('#jobs tr[data-job="offsite"]', "run-job")
        assert message.startswith(("started:", "failed: job offsite")), message
        error = _wait_operation(page, "failed")
        assert error.startswith("job offsite: 1 failed; db: "), error
        assert "gone" in error
        page.open("/jobs")
        outcome = page.text('#jobs tr[data-job="offsite"] .outcome')
        assert outcome.startswith("failed "), outcome
        assert "gone" in outcome, outcome
        assert dashboard.amber_json("snapshot", "list") == []  # nothing left behind
    finally:
        stop(dashboard)
