"""`amber target add --init` leaves the new repository's key in the key cache, so the first
backup does not pay the password's scrypt (issue 17: the cold command's constant)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _amber(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AMBER_KEY_CACHE": str(tmp_path / "keys")}
    return subprocess.run(
        [sys.executable, "-m", "amber", "--pool", str(tmp_path / "no-pool"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_target_add_init_fills_the_key_cache(tmp_path: Path) -> None:
    config, repo, password = tmp_path / "targets.json", tmp_path / "repo", tmp_path / "password"
    repo.mkdir()
    password.write_text("correct horse battery staple\n")
    added = _amber(
        tmp_path,
        "target", "--config", str(config), "add", "t", f"file://{repo}",
        "--password-file", str(password), "--init",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    [entry] = (tmp_path / "keys").iterdir()
    remembered = entry.read_bytes()
    assert b"correct horse" not in remembered
    listed = _amber(tmp_path, "-o", "json", "backup", "--config", str(config), "list", "-t", "t")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "[]"
    # The entry opened the repository as it was: nothing was derived and remembered again.
    assert [p.name for p in (tmp_path / "keys").iterdir()] == [entry.name]
    assert entry.read_bytes() == remembered
