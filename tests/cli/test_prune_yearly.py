"""`amber backup prune --keep-yearly N` keeps the newest backup of each of the N newest years.

Backups dated over several years are written into a real file repository in-process (a fake
clock dates them); the prune runs through the real `amber` command in a subprocess.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from amber.backup.keys import Password
from amber.backup.repository import open_repository
from amber.blobstore.filestore import FileStore
from tests.backup.helpers import backup, random_bytes
from tests.backup.memstore import FakeClock
from tests.cli.runner import add_file_target, amber, amber_json

# Mid-month noon UTC: the same calendar year in any policy time zone.
DATES = [(2021, 3), (2021, 9), (2022, 5), (2023, 2), (2023, 11), (2024, 7)]


def _dated_backups(repo_root: Path) -> dict[tuple[int, int], str]:
    clock = FakeClock()
    repo = open_repository(
        FileStore(repo_root), Password("correct horse battery staple"), clock=clock
    )
    made = {}
    for n, (year, month) in enumerate(DATES):
        clock.now = datetime(year, month, 15, 12, tzinfo=UTC).timestamp()
        made[(year, month)] = backup(repo, random_bytes(64 * 1024, seed=n))
    return made


def test_keep_yearly_keeps_the_newest_backup_of_each_of_the_newest_years(
    tmp_path: Path,
) -> None:
    pool = tmp_path / "no-pool"
    config = add_file_target(pool, tmp_path)
    made = _dated_backups(tmp_path / "repo")
    base = ("backup", "--config", str(config))

    result = amber_json(pool, *base, "prune", "-t", "t", "--keep-yearly", "2", "--grace", "0")

    assert result["kept_backups"] == {made[(2024, 7)]: "yearly #1", made[(2023, 11)]: "yearly #2"}
    gone = {made[d] for d in DATES} - set(result["kept_backups"])
    assert sorted(result["removed_backups"]) == sorted(gone)
    assert result["deleted_packs"], "the removed backups' data is swept"
    listed = amber_json(pool, *base, "list", "-t", "t")
    assert sorted(b["backup_id"] for b in listed) == sorted(result["kept_backups"])


def test_keep_yearly_runs_out_of_years_and_keeps_the_oldest_too(tmp_path: Path) -> None:
    pool = tmp_path / "no-pool"
    config = add_file_target(pool, tmp_path)
    made = _dated_backups(tmp_path / "repo")

    result = amber_json(
        pool, "backup", "--config", str(config), "prune", "-t", "t", "--keep-yearly", "9",
        "--dry-run",
    )  # fmt: skip

    # One per year (2024, 2023, 2022, 2021), then the oldest backup of all.
    expected = {made[(2024, 7)], made[(2023, 11)], made[(2022, 5)], made[(2021, 9)]}
    assert set(result["kept_backups"]) == expected | {made[(2021, 3)]}
    assert result["removed_backups"] == [made[(2023, 2)]]
    assert result["dry_run"] is True


def test_a_negative_keep_yearly_is_one_usage_line(tmp_path: Path) -> None:
    pool = tmp_path / "no-pool"
    config = add_file_target(pool, tmp_path)
    made = _dated_backups(tmp_path / "repo")

    done = amber(pool, "backup", "--config", str(config), "prune", "-t", "t", "--keep-yearly", "-1")

    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "keep-yearly must be 0 or more" in done.stderr
    listed = amber_json(pool, "backup", "--config", str(config), "list", "-t", "t")
    assert len(listed) == len(made)
