"""A backup VolumeSnapshot's ID (`amber:v1:bak:TARGET:KEY`) names a backup for the CLI as it
does for the driver: the manifest under the id derived from the key, and only if that manifest
carries the key. The real `amber` in a subprocess, over a real repository in a directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amber.backup.handles import LABEL_KEY, key_backup_id
from amber.backup.repository import Repository, init_repository
from amber.backup.writer import ManifestDraft
from amber.blobstore.filestore import FileStore
from tests.backup.helpers import CHUNK, FAST_SCRYPT, PACK, PASSWORD, random_bytes
from tests.engine.helpers import Cli


def _commit(repo: Repository, key: str, label: str, seed: int) -> str:
    writer = repo.writer()
    chunk = writer.add_chunk(random_bytes(CHUNK, seed))
    draft = ManifestDraft(
        "vol-a", CHUNK, [chunk], labels={LABEL_KEY: label}, backup_id=key_backup_id(key)
    )
    return writer.commit(draft)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """Target `fs` holding the backup of key `mine`, and under the id of key `foreign` a backup
    labelled with another key."""
    root = tmp_path / "repo"
    root.mkdir()
    repo = init_repository(
        FileStore(root), PASSWORD, chunk_size=CHUNK, pack_size=PACK, scrypt=FAST_SCRYPT
    )
    _commit(repo, "mine", "mine", 1)
    _commit(repo, "foreign", "someone-else", 2)
    password = tmp_path / "password"
    password.write_text(PASSWORD.text)
    cli = Cli(tmp_path / "no-pool", tmp_path / "targets.json")
    cli.ok("target", "add", "fs", f"file://{root}", "--password-file", str(password))
    return cli


def _show(cli: Cli, name: str) -> str:
    done = cli.ok("--output", "json", "backup", "show", name)
    backup_id: str = json.loads(done.stdout)["backup_id"]
    return backup_id


def test_a_snapshot_id_by_key_names_the_backup_labelled_with_it(cli: Cli) -> None:
    mine, foreign = key_backup_id("mine"), key_backup_id("foreign")
    assert _show(cli, "amber:v1:bak:fs:mine") == mine
    assert _show(cli, f"amber:v1:bak:fs:{foreign}") == foreign  # by id: no key to check
    assert _show(cli, f"amber:v1:backup:fs:{foreign}") == foreign
    for args in (
        ["backup", "show", "amber:v1:bak:fs:foreign"],
        ["backup", "delete", "amber:v1:bak:fs:foreign"],
        ["backup", "restore", "amber:v1:bak:fs:foreign", "v"],
        ["backup", "import", "amber:v1:bak:fs:foreign", "-n", "ns", "--name", "x"],
    ):
        done = cli.run(*args)
        assert done.returncode == 3, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "no backup of snapshot key 'foreign'" in lines[0]
    assert _show(cli, f"amber:v1:backup:fs:{foreign}") == foreign  # not deleted
