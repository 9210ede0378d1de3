"""Run inside the docs test's mount namespace: release what the documents' commands left.

Each pool found under the given directories has its mounts and exposed devices released
through Amber itself (which knows its loop devices); then whatever is still mounted below the
directories is unmounted (a loopback pool's image frees its loop device as it goes). Loop
devices are never matched by name: inside the namespace the paths look like the machine's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from amber.domain.errors import AmberError
from amber.pool import Pool
from amber.pool.context import DB_NAME
from amber.system import mount


def _release(root: Path) -> None:
    try:
        pool = Pool.open(root)
    except AmberError:
        return
    try:
        for attachment in pool.attachments.list():
            name = attachment.object_name
            kind = "volume" if pool.volumes.find(name) is not None else "snapshot"
            try:
                pool.attachments.release(kind, name)
            except AmberError as e:
                print(f"cleanup: {kind} {name}: {e}", file=sys.stderr)
    finally:
        pool.close()


def main(directories: list[str]) -> None:
    for directory in map(Path, directories):
        for db in sorted(directory.rglob(DB_NAME)) if directory.is_dir() else []:
            _release(db.parent)
    prefixes = tuple(d.rstrip("/") + "/" for d in directories)
    for entry in reversed(mount.mount_table()):
        if str(entry.target).startswith(prefixes):
            subprocess.run(["umount", str(entry.target)], check=False)


if __name__ == "__main__":
    main(sys.argv[1:])
