"""Every numeric option of every command refuses nonsense: one line, exit 2, nothing changed.

The table covers each option that takes a number (counts, seconds, ratios, percentages, sizes):
negative values, NaN and infinity (click turns `nan` and `inf` into floats, and NaN passes every
range test), values beyond a setting's range, and sizes written with a space or above 1 PiB.
The real `amber` runs in a subprocess; docs/reliability.md lists the review.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.runner import amber
from tests.engine.helpers import PASSWORD_TEXT, Cli

# (argv, words the one error line must contain)
REFUSED: list[tuple[list[str], str]] = [
    # backup prune: retention counts and tags (a negative count removed every backup)
    (["backup", "prune", "-t", "fs", "--keep-last", "-1"], "keep-last must be 0 or more"),
    (["backup", "prune", "-t", "fs", "--keep-hourly", "-1"], "keep-hourly must be 0 or more"),
    (["backup", "prune", "-t", "fs", "--keep-daily", "-7"], "keep-daily must be 0 or more"),
    (["backup", "prune", "-t", "fs", "--keep-weekly", "-1"], "keep-weekly must be 0 or more"),
    (["backup", "prune", "-t", "fs", "--keep-monthly", "-1"], "keep-monthly must be 0 or more"),
    (["backup", "prune", "-t", "fs", "--keep-yearly", "-1"], "keep-yearly must be 0 or more"),
    (["backup", "prune", "-t", "fs", "--keep-last", "2", "--keep-daily", "-1"], "keep-daily"),
    (["backup", "prune", "-t", "fs", "--keep-tag", ""], "keep-tag must not be empty"),
    (["backup", "prune", "-t", "fs", "--keep-last", "x"], "'x' is not a valid integer"),
    (["backup", "prune", "-t", "fs", "--keep-last", "1", "--grace", "-1"], "--grace"),
    (["backup", "prune", "-t", "fs", "--keep-last", "1", "--grace", "nan"], "finite"),
    (["backup", "prune", "-t", "fs", "--keep-last", "1", "--grace", "inf"], "finite"),
    # backup check --subset: a percentage in (0, 100]
    (["backup", "check", "-t", "fs", "--read-data", "--subset", "0"], "--subset"),
    (["backup", "check", "-t", "fs", "--read-data", "--subset", "101"], "--subset"),
    (["backup", "check", "-t", "fs", "--read-data", "--subset", "nan"], "--subset"),
    (["backup", "check", "-t", "fs", "--read-data", "--subset", "-5"], "--subset"),
    # node and controller: counts and seconds
    (["node", "--node-id", "n1", "--max-volumes", "-1"], "--max-volumes"),
    (["node", "--node-id", "n1", "--max-volumes", "2147483648"], "--max-volumes"),
    (["node", "--node-id", "n1", "--grace", "-1"], "--grace"),
    (["node", "--node-id", "n1", "--grace", "nan"], "finite"),
    (["node", "--node-id", "n1", "--grace", "inf"], "finite"),
    (["node", "--node-id", "n1", "--upload-retry", "0"], "--upload-retry"),
    (["node", "--node-id", "n1", "--upload-retry", "nan"], "finite"),
    (["node", "--node-id", "n1", "--upload-retry", "inf"], "finite"),
    (["node", "--node-id", "n1", "--upload-attempts", "0"], "--upload-attempts"),
    (["controller", "--grace", "-0.5"], "--grace"),
    (["controller", "--grace", "nan"], "finite"),
    # pool init --overprovisioning: a ratio in [1, 100]
    (["pool", "init", "--dir", "{tmp}/p", "--overprovisioning", "0.5"], "overprovisioning"),
    (["pool", "init", "--dir", "{tmp}/p", "--overprovisioning", "101"], "overprovisioning"),
    (["pool", "init", "--dir", "{tmp}/p", "--overprovisioning", "-1"], "overprovisioning"),
    (["pool", "init", "--dir", "{tmp}/p", "--overprovisioning", "nan"], "finite"),
    (["pool", "init", "--dir", "{tmp}/p", "--overprovisioning", "inf"], "finite"),
    (["pool", "init", "--image", "{tmp}/i.img", "--overprovisioning", "0.5"], "overprovisioning"),
    # sizes: one rule (domain/units.py) for every --size
    (["pool", "init", "--image", "{tmp}/i.img", "--size", "10 Gi"], "no space"),
    (["volume", "create", "x", "--size", "10 Gi"], "no space"),
    (["volume", "create", "x", "--size", "2Pi"], "above the maximum volume size (1 PiB)"),
    (["volume", "create", "x", "--size", "1025Ti"], "above the maximum volume size (1 PiB)"),
    (["volume", "create", "x", "--size", "9" * 5000], "above the maximum volume size (1 PiB)"),
    (["volume", "create", "x", "--size", "-1Gi"], "invalid size"),
    (["volume", "create", "x", "--size", "0"], "greater than zero"),
    (["volume", "create", "x", "--size", "1e9"], "invalid size"),
    (["volume", "create", "x", "--size", "nan"], "invalid size"),
    (["volume", "expand", "x", "--size", "10 Gi"], "no space"),
    (["backup", "restore", "0" * 32, "v", "-t", "fs", "--size", "1 Gi"], "no space"),
    (["backup", "restore", "0" * 32, "v", "-t", "fs", "--size", "2Pi"], "maximum volume size"),
    (["csi", "create-volume", "x", "--size", "10 Gi"], "no space"),
    (["csi", "create-volume", "x", "--size", "2Pi"], "maximum volume size"),
    (["csi", "expand", "some-id", "--size", "2Pi"], "maximum volume size"),
    (["demo", "--data", "1 Gi"], "no space"),
    (["demo", "--image-size", "3Pi"], "maximum volume size"),
]


@pytest.mark.parametrize(("args", "words"), REFUSED, ids=[" ".join(a)[:60] for a, _ in REFUSED])
def test_numeric_options_refuse_nonsense(
    pool_dir: Path, tmp_path: Path, args: list[str], words: str
) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert amber(pool_dir, "pool", "status").returncode == 0
    before = sorted(p.name for p in pool_dir.iterdir())
    done = amber(pool_dir, *argv, timeout=60)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines
    assert words in lines[0], lines[0]
    assert len(lines[0]) < 300, lines[0]
    assert done.stdout == ""
    # Nothing was made: no pool directory or image, no new file in the pool.
    assert list(tmp_path.iterdir()) == []
    assert sorted(p.name for p in pool_dir.iterdir()) == before


# -- prune: the negative count that removed every backup --------------------------------------


def _backups(cli: Cli) -> list[str]:
    listed = json.loads(cli.ok("--output", "json", "backup", "list", "-t", "fs").stdout)
    return [b["backup_id"] for b in listed]


@pytest.fixture
def three_backups(pool_dir: Path, tmp_path: Path) -> Cli:
    """Target `fs` (a directory) with three backups of one volume."""
    cli = Cli(pool_dir, tmp_path / "targets.json")
    (tmp_path / "password").write_text(PASSWORD_TEXT)
    (tmp_path / "repo").mkdir()
    repo = f"file://{tmp_path / 'repo'}"
    cli.ok("target", "add", "fs", repo, "--password-file", str(tmp_path / "password"), "--init")
    cli.ok("volume", "create", "v", "--size", "16Mi", "--block")
    for n in range(3):
        cli.ok("snapshot", "create", "v", f"s{n}")
        cli.ok("backup", "create", f"s{n}", "-t", "fs")
    return cli


@pytest.mark.parametrize(
    "bad",
    [
        ["--keep-last", "-1"],
        ["--keep-daily", "-1"],
        ["--keep-last", "-1", "--keep-daily", "-1"],
        ["--keep-tag", ""],
        ["--keep-tag", " "],
    ],
)
def test_prune_with_nonsense_retention_removes_nothing(three_backups: Cli, bad: list[str]) -> None:
    cli = three_backups
    before = _backups(cli)
    assert len(before) == 3
    done = cli.run("backup", "prune", "-t", "fs", "--grace", "0", *bad)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert _backups(cli) == before
    # A sensible policy still prunes.
    cli.ok("backup", "prune", "-t", "fs", "--grace", "0", "--keep-last", "1")
    assert _backups(cli) == before[-1:]
