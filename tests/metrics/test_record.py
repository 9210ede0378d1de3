"""The recording helpers: what each event adds, and what they refuse."""

from __future__ import annotations

import subprocess
import sys

import pytest

from amber.metrics import KINDS, Metrics, Outcome
from tests.metrics.helpers import total, value


def scrape(metrics: Metrics) -> bytes:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain; version=")
    return body


def test_backups_count_by_outcome_and_add_up_their_bytes() -> None:
    metrics = Metrics()
    metrics.record_backup(Outcome.SUCCESS, 12.5, read=100, new=60, stored=40)
    metrics.record_backup("success", 1.5, read=10, new=0, stored=0)
    metrics.record_backup("failure", 0.5)
    text = scrape(metrics)
    assert value(text, "amber_backups_total", outcome="success") == 2
    assert value(text, "amber_backups_total", outcome="failure") == 1
    assert value(text, "amber_backups_total", outcome="cancelled") == 0
    assert value(text, "amber_backup_read_bytes_total") == 110
    assert value(text, "amber_backup_new_bytes_total") == 60
    assert value(text, "amber_backup_stored_bytes_total") == 40
    assert value(text, "amber_backup_duration_seconds_count", outcome="success") == 2
    assert value(text, "amber_backup_duration_seconds_sum", outcome="success") == 14.0
    assert value(text, "amber_backup_duration_seconds_bucket", outcome="success", le="5.0") == 1


def test_restores_count_by_outcome_and_add_up_downloads() -> None:
    metrics = Metrics()
    metrics.record_restore("success", 3.0, downloaded=4096)
    metrics.record_restore("cancelled", 1.0)
    text = scrape(metrics)
    assert value(text, "amber_restores_total", outcome="success") == 1
    assert value(text, "amber_restores_total", outcome="cancelled") == 1
    assert value(text, "amber_restores_total", outcome="failure") == 0
    assert value(text, "amber_restore_downloaded_bytes_total") == 4096


@pytest.mark.parametrize("outcome", ["ok", "skipped", "Failure", ""])
def test_an_unknown_operation_outcome_is_refused(outcome: str) -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="outcome"):
        metrics.record_backup(outcome, 1.0)
    with pytest.raises(ValueError, match="outcome"):
        metrics.record_restore(outcome, 1.0)
    assert total(scrape(metrics), "amber_backups_total") == 0


def test_inflight_counts_while_the_block_runs_even_when_it_fails() -> None:
    metrics = Metrics()
    with metrics.inflight("backup"), metrics.inflight("backup"):
        assert value(scrape(metrics), "amber_operations_in_flight", kind="backup") == 2
    seen = []

    def failing_restore() -> None:
        with metrics.inflight("restore"):
            seen.append(value(scrape(metrics), "amber_operations_in_flight", kind="restore"))
            raise RuntimeError("the restore failed")

    with pytest.raises(RuntimeError):
        failing_restore()
    assert seen == [1]
    text = scrape(metrics)
    for kind in KINDS:
        assert value(text, "amber_operations_in_flight", kind=kind) == 0
    with pytest.raises(ValueError, match="kind"), metrics.inflight("prune-everything"):
        pass


def test_csi_calls_count_by_method_and_code() -> None:
    metrics = Metrics()
    metrics.record_csi_call("CreateVolume", "OK", 0.2)
    metrics.record_csi_call("CreateVolume", "OK", 0.3)
    metrics.record_csi_call("CreateVolume", "INVALID_ARGUMENT", 0.001)
    text = scrape(metrics)
    assert value(text, "amber_csi_calls_total", method="CreateVolume", code="OK") == 2
    assert value(text, "amber_csi_calls_total", method="CreateVolume", code="INVALID_ARGUMENT") == 1
    assert value(text, "amber_csi_call_duration_seconds_count", method="CreateVolume") == 3


def test_job_runs_failures_and_last_success() -> None:
    metrics = Metrics()
    metrics.record_job_run("nightly", "success", 1000.0)
    metrics.record_job_run("nightly", "failure", 2000.0)
    metrics.record_job_run("nightly", Outcome.SKIPPED, 1500.0)
    metrics.record_job_run("hourly", "failure", 10.0)
    text = scrape(metrics)
    assert value(text, "amber_job_runs_total", recurring_job="nightly") == 3
    assert value(text, "amber_job_failures_total", recurring_job="nightly") == 1
    assert (
        value(text, "amber_job_last_success_timestamp_seconds", recurring_job="nightly") == 1500.0
    )
    assert value(text, "amber_job_failures_total", recurring_job="hourly") == 1
    # Never succeeded: no timestamp (an alert on its age must not see "1970").
    assert value(text, "amber_job_last_success_timestamp_seconds", recurring_job="hourly") is None
    # A run that ended earlier but is recorded later never moves the time back.
    metrics.record_job_run("nightly", "success", 1200.0)
    assert (
        value(scrape(metrics), "amber_job_last_success_timestamp_seconds", recurring_job="nightly")
        == 1500
    )
    with pytest.raises(ValueError, match="outcome"):
        metrics.record_job_run("nightly", "cancelled", 1.0)


def test_two_registries_do_not_share_values() -> None:
    one, two = Metrics(), Metrics()
    one.record_backup("success", 1.0)
    assert value(scrape(two), "amber_backups_total", outcome="success") == 0


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    metrics = Metrics()
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    body, content_type = metrics.exposition("text/plain")
    assert content_type.startswith("text/plain")
    assert b"# EOF" not in body


def test_the_process_registry_is_made_once() -> None:
    from amber import metrics

    assert metrics.default() is metrics.default()
    body, _ = metrics.exposition()
    assert b"amber_build_info" in body


class Stop(Exception):
    """An exception the caller says means "cancelled"."""


def test_a_backup_run_block_records_how_it_ended() -> None:
    metrics = Metrics()
    with metrics.backup_run() as run:
        assert value(scrape(metrics), "amber_operations_in_flight", kind="backup") == 1
        run.ended(30.0, read=1000, new=400, stored=300)
    with pytest.raises(OSError), metrics.backup_run():
        raise OSError("the target went away")
    with pytest.raises(Stop), metrics.backup_run(cancelled=(Stop,)):
        raise Stop
    with pytest.raises(KeyboardInterrupt), metrics.backup_run():
        raise KeyboardInterrupt
    with metrics.backup_run():  # ended well without numbers: the block's own duration
        pass
    text = scrape(metrics)
    assert value(text, "amber_backups_total", outcome="success") == 2
    assert value(text, "amber_backups_total", outcome="failure") == 1
    assert value(text, "amber_backups_total", outcome="cancelled") == 2
    assert value(text, "amber_backup_read_bytes_total") == 1000
    assert value(text, "amber_backup_new_bytes_total") == 400
    assert value(text, "amber_backup_stored_bytes_total") == 300
    assert value(text, "amber_backup_duration_seconds_bucket", outcome="success", le="15.0") == 1
    assert value(text, "amber_operations_in_flight", kind="backup") == 0


def test_a_restore_run_block_records_how_it_ended() -> None:
    metrics = Metrics()
    with metrics.restore_run() as run:
        assert value(scrape(metrics), "amber_operations_in_flight", kind="restore") == 1
        run.ended(2.0, downloaded=4096)
    with pytest.raises(Stop), metrics.restore_run(cancelled=(Stop,)):
        raise Stop
    with pytest.raises(ValueError, match="damaged"), metrics.restore_run():
        raise ValueError("damaged chunk")
    text = scrape(metrics)
    assert value(text, "amber_restores_total", outcome="success") == 1
    assert value(text, "amber_restores_total", outcome="cancelled") == 1
    assert value(text, "amber_restores_total", outcome="failure") == 1
    assert value(text, "amber_restore_downloaded_bytes_total") == 4096
    assert value(text, "amber_operations_in_flight", kind="restore") == 0


def test_recording_does_not_import_prometheus_client() -> None:
    """A one-shot command records its backup without paying for the client's import (its HTTP
    and e-mail modules); reading the metrics imports it."""
    program = """
import sys
from amber import metrics
from amber.ops import backups  # what `amber backup create` loads
with metrics.backup_run() as run:
    run.ended(1.0, 10, 5, 3)
metrics.record_csi_call("Probe", "OK", 0.01)
print(sorted(m for m in sys.modules if m.startswith("prometheus_client")))
metrics.exposition()
print("prometheus_client" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "True"]
