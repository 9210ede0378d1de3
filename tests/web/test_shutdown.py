"""Stopping `amber dashboard` (SIGTERM, SIGINT) closes what it opened: the job records' SQLite
database is left without its `-wal` and `-shm` files, as a closed database is."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from amber.jobs.records import DB_NAME
from tests.web.conftest import start_dashboard


@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGTERM, 0), (signal.SIGINT, 130)],  # Ctrl-C: the shell's 128 + SIGINT
)
def test_a_stopped_dashboard_leaves_its_job_records_closed(
    pool_dir: Path, targets: Path, jobs_file: Path, sig: signal.Signals, code: int
) -> None:
    running = start_dashboard(pool_dir, targets, "--jobs-file", str(jobs_file))
    try:
        status, _, body = running.request("GET", "/jobs")
        assert status == 200, body
        assert 'data-job="hourly"' in body, body
        db = pool_dir / DB_NAME
        assert db.exists(), body
        running.process.send_signal(sig)
        _, err = running.process.communicate(timeout=30)
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.communicate(timeout=30)
    assert running.process.returncode == code, err
    assert "Traceback" not in err
    left = sorted(p.name for p in pool_dir.glob(f"{DB_NAME}-*"))
    assert left == [], f"the job records were not closed: {left}"
