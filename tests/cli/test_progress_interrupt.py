"""Ctrl-C during a backup (issue 16, item 6): exit 130, one line saying what was kept and what
to run next; the next run reuses what was uploaded. The interrupt is a real SIGINT the
process sends itself at a named failpoint (no sleeps)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from amber.cli.state import INTERRUPT_ENV
from tests.cli.runner import add_file_target, amber, amber_json


def _backup(pool: Path, config: Path, interrupt_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != INTERRUPT_ENV}
    if interrupt_at:
        env[INTERRUPT_ENV] = interrupt_at
    argv = ["--pool", str(pool), "-o", "json", "backup", "--config", str(config)]
    return subprocess.run(
        [sys.executable, "-m", "amber", *argv, "create", "s1", "--target", "t"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        # A shell runs background jobs with SIGINT ignored, and Python keeps it ignored: give
        # the command the default Ctrl-C, as a terminal would.
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_says_what_was_kept_and_the_next_run_reuses_it(
    pool_dir: Path, work_dir: Path, tmp_path: Path
) -> None:
    config = add_file_target(pool_dir, tmp_path)
    amber_json(pool_dir, "volume", "create", "db", "--size", "64Mi")
    assert amber(pool_dir, "volume", "mount", "db", str(work_dir / "db")).returncode == 0
    (work_dir / "db" / "data").write_bytes(os.urandom(8 << 20))
    amber_json(pool_dir, "snapshot", "create", "db", "s1")

    stopped = _backup(pool_dir, config, "backup.uploaded")
    assert stopped.returncode == 130, stopped.stderr
    (line,) = stopped.stderr.splitlines()
    assert line.startswith("interrupted: no backup of s1 was committed")
    assert "kept" in line
    assert "amber backup create s1 --target t" in line
    assert "Traceback" not in stopped.stderr
    listed = amber_json(pool_dir, "backup", "--config", str(config), "list", "--target", "t")
    assert listed == []

    again = _backup(pool_dir, config, None)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["bytes_read"] >= 8 << 20
    assert report["bytes_new"] == 0  # every chunk was uploaded (and kept) by the stopped run
