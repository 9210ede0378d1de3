"""`amber target add --init --chunk-size SIZE`: a new repository with the chosen chunk size
(sizes written as everywhere else in the CLI: `1Mi`, `64Ki`, bytes); a size the format does not
take, or the option without `--init`, is one line and exit 2 with nothing saved; an existing
repository keeps its own chunk size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amber.backup.repository import read_config
from amber.blobstore.filestore import FileStore
from amber.domain.units import KiB, MiB
from tests.cli.runner import amber


def _add(tmp_path: Path, *extra: str, name: str = "t") -> subprocess.CompletedProcess[str]:
    """`amber -o json target add NAME file://tmp_path/repo-NAME --password-file ... EXTRA`."""
    password = tmp_path / "password"
    password.write_text("correct horse battery staple\n")
    command = [sys.executable, "-m", "amber", "--pool", str(tmp_path / "no-pool"), "-o", "json"]
    command += ["target", "--config", str(tmp_path / "targets.json"), "add", name]
    command += [f"file://{tmp_path / f'repo-{name}'}", "--password-file", str(password)]
    return subprocess.run(
        [*command, *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "AMBER_KEY_CACHE": str(tmp_path / "keys")},
        timeout=120,
        check=False,
    )


def _chunk_size(repo: Path) -> int:
    config, _ = read_config(FileStore(repo))
    return config.chunk_size


@pytest.mark.parametrize(
    ("given", "expected"), [("1Mi", MiB), ("64Ki", 64 * KiB), ("4096", 4 * KiB)]
)
def test_init_makes_the_repository_with_the_chunk_size(
    tmp_path: Path, given: str, expected: int
) -> None:
    added = _add(tmp_path, "--init", "--chunk-size", given)
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["chunk_size"] == expected
    assert _chunk_size(tmp_path / "repo-t") == expected


def test_without_the_option_the_default_stays(tmp_path: Path) -> None:
    added = _add(tmp_path, "--init")
    assert added.returncode == 0, added.stderr
    assert _chunk_size(tmp_path / "repo-t") == 256 * KiB


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ("64K", "not 64K (64,000 bytes)"),  # K is 1000: not a power of two
        ("3Mi", "not 3Mi (3,145,728 bytes)"),
        ("256", "not 256 (256 bytes)"),  # below 512
        ("128Mi", "not 128Mi (134,217,728 bytes)"),  # above 64 MiB
        ("2Pi", "not 2Pi"),  # above every size the CLI takes
    ],
)
def test_a_chunk_size_the_format_does_not_take_is_one_line(
    tmp_path: Path, given: str, error: str
) -> None:
    added = _add(tmp_path, "--init", "--chunk-size", given)
    assert added.returncode == 2
    assert added.stderr == (
        f"error: --chunk-size must be a power of two from 512 B to 64.0 MiB (e.g. 256Ki, 1Mi), "
        f"{error}\n"
    )
    assert not (tmp_path / "targets.json").exists()
    assert not (tmp_path / "repo-t").exists()


def test_a_malformed_size_is_the_cli_s_one_line(tmp_path: Path) -> None:
    added = _add(tmp_path, "--init", "--chunk-size", "1MiB")
    assert added.returncode == 2
    assert added.stderr.startswith("error: invalid size '1MiB': use a number with an optional")
    assert added.stderr.count("\n") == 1


def test_the_option_without_init_is_refused(tmp_path: Path) -> None:
    added = _add(tmp_path, "--chunk-size", "1Mi", "--no-check")
    assert added.returncode == 2
    assert added.stderr == (
        "error: --chunk-size is the chunk size of a new repository: add --init\n"
    )
    assert not (tmp_path / "targets.json").exists()


def test_an_existing_repository_keeps_its_chunk_size(tmp_path: Path) -> None:
    assert _add(tmp_path, "--init", "--chunk-size", "1Mi").returncode == 0
    (tmp_path / "targets.json").unlink()  # the same repository, added again
    again = _add(tmp_path, "--init", "--chunk-size", "64Ki")
    assert again.returncode != 0
    assert again.stderr == (
        "error: target 't' holds a repository already, with 1.0 MiB chunks: --chunk-size only "
        "sets a new repository's; add the target without it\n"
    )
    assert _chunk_size(tmp_path / "repo-t") == MiB
    assert _add(tmp_path, "--init", "--chunk-size", "1Mi").returncode == 0  # the same: fine


def test_a_backup_into_a_1mi_repository_restores(pool_dir: Path, tmp_path: Path) -> None:
    """The repository made so is used as any other: a backup has its chunk size and restores
    byte for byte."""
    assert _add(tmp_path, "--init", "--chunk-size", "1Mi").returncode == 0
    config = str(tmp_path / "targets.json")
    assert amber(pool_dir, "volume", "create", "db", "--size", "8Mi", "--block").returncode == 0
    image = json.loads(amber(pool_dir, "-o", "json", "volume", "show", "db").stdout)
    data = os.urandom(3 * MiB)
    with open(image["volume"]["image"], "r+b") as f:
        f.write(data)
    made = amber(pool_dir, "backup", "--config", config, "create", "db", "--snapshot")
    assert made.returncode == 0, made.stderr
    restored = amber(
        pool_dir, "backup", "--config", config, "restore", "latest", "copy", "--volume", "db"
    )
    assert restored.returncode == 0, restored.stderr
    copy = json.loads(amber(pool_dir, "-o", "json", "volume", "show", "copy").stdout)
    with open(copy["volume"]["image"], "rb") as f:
        assert f.read(len(data)) == data
