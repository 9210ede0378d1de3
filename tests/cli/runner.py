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


def add_file_target(pool: Path, tmp_path: Path) -> Path:
    """Add an encrypted file target `t` (repository in tmp_path/repo, created now); return the
    targets file to pass as `--config`."""
    config = tmp_path / "targets.json"
    password = tmp_path / "password"
    password.write_text("correct horse battery staple\n")
    (tmp_path / "repo").mkdir()
    done = amber(
        pool,
        "target",
        "--config",
        str(config),
        "add",
        "t",
        f"file://{tmp_path / 'repo'}",
        "--password-file",
        str(password),
        "--init",
    )
    assert done.returncode == 0, done.stderr
    return config
