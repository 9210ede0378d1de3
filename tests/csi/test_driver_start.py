"""A stop signal that arrives while `amber node` starts serving still stops it cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from amber.cli.state import INTERRUPT_ENV
from amber.csi.driver import STARTED_FAILPOINT
from tests.csi.driver import EXIT_TIMEOUT, NODE, REPO


def test_signal_between_start_and_handlers_stops_cleanly(fresh_pool: Path, tmp_path: Path) -> None:
    # The process sends itself SIGINT after the server started listening and before its
    # signal handlers are installed: the window where a signal used to kill the node.
    sock = tmp_path / "csi.sock"
    command = [sys.executable, "-m", "amber", "--pool", str(fresh_pool), "node"]
    command += [f"--endpoint=unix://{sock}", f"--node-id={NODE}", "--grace=20"]
    env = {**os.environ, INTERRUPT_ENV: STARTED_FAILPOINT}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=EXIT_TIMEOUT
    )
    assert done.returncode == 0, f"driver exited {done.returncode}:\n{done.stderr[-4000:]}"
    assert "received SIGINT while starting" in done.stderr
    assert not sock.exists()
