"""The dashboard's backup sizes with manifest patches (format version 2): patches over zero or
hole chunks add data, patches over data chunks do not."""

from __future__ import annotations

from amber.backup.manifest import HOLE, ZERO, Manifest, Patch
from amber.web.views import _backup_row

CHUNK = 65536
A, B = b"a" * 32, b"b" * 32


def test_patched_backup_counts_the_bytes_patches_add() -> None:
    manifest = Manifest(
        backup_id="ab" * 16,
        volume_name="vol-a",
        volume_size=3 * CHUNK,
        chunk_size=CHUNK,
        chunk_map=[A, HOLE, ZERO],
        created=0.0,
        patches=(Patch(10, 100, B), Patch(CHUNK + 5, 200, B), Patch(2 * CHUNK, 300, B, 7)),
    )
    assert _backup_row("t", manifest).data == CHUNK + 200 + 300
