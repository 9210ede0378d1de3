"""Run the real `amber` command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from amber.cli.state import CRASH_ENV


def amber(
    pool: Path, *args: str, crash_at: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "amber", "--pool", str(pool), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def amber_json(pool: Path, *args: str) -> Any:
    done = amber(pool, "--output", "json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
