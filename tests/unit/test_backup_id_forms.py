"""A backup snapshot ID is read by one rule: `amber.ops.handles.parse_backup_id` (the CSI driver)
answers what `amber.backup.handles.parse_backup_name` (the CLI) reads, or None where a CSI ID
is not one (over 128 bytes, a handle naming a prefix or `latest`, anything malformed)."""

from __future__ import annotations

import pytest

from amber.backup.handles import key_backup_id, parse_backup_name
from amber.ops.handles import BackupRef, parse_backup_id

ID = "4a84" + "0" * 27 + "f"

ACCEPTED = [
    (f"amber:v1:bak:nas:{ID}", BackupRef("nas", backup_id=ID)),
    ("amber:v1:bak:nas:snapshot-1f2e", BackupRef("nas", key="snapshot-1f2e")),
    (f"amber:v1:backup:nas:{ID}", BackupRef("nas", backup_id=ID)),
]

REFUSED = [
    "",
    ID,
    "amber:v1:bak:",
    "amber:v1:bak:nas",
    "amber:v1:bak:nas:",
    "amber:v1:backup:nas:4a84",  # a prefix: the CLI resolves it, a CSI ID never is one
    "amber:v1:backup:nas:latest",
    "amber:v1:bak:Bad Target:snapshot-1",
    "amber:v1:bak:nas:bad key!",
    "amber:v1:bak:nas:" + "k" * 120,  # over 128 bytes
    "amber:v2:bak:nas:snapshot-1",
]


@pytest.mark.parametrize(("text", "ref"), ACCEPTED)
def test_an_id_the_csi_driver_reads_is_what_the_cli_reads(text: str, ref: BackupRef) -> None:
    assert parse_backup_id(text) == ref
    name = parse_backup_name(text)
    assert name.target == ref.target
    assert name.key == ref.key
    assert name.backup_id == (ref.backup_id or key_backup_id(ref.key or ""))


@pytest.mark.parametrize("text", REFUSED)
def test_anything_else_is_not_a_backup_snapshot_id(text: str) -> None:
    assert parse_backup_id(text) is None
