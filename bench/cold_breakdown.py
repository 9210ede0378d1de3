"""Where one `amber` command's wall time goes, by phase, in-process.

Runs the CLI's entry point with its arguments after timing the imports a `backup create`
needs, with the engine's phases wrapped in timers (pool open, repository open, lock, index
load, planning, pipeline, commit, base install). Prints `{phase: seconds}` as JSON on stderr;
the command's own output goes to stdout as usual. The interpreter's start (~20-70 ms here) is
not in it. Run it against any source tree with PYTHONPATH, page cache dropped or not:

    sync; echo 3 > /proc/sys/vm/drop_caches
    PYTHONPATH=src .venv/bin/python bench/cold_breakdown.py --pool POOL -o json \\
        backup create SNAPSHOT -t TARGET

Phases nest: `create_backup` holds the lock, index and `_write` phases; `_write` holds
planning and commit. The wrapped functions exist in every tree since the cold-start work
(issue 17); a tree without one leaves that phase out.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

START = time.perf_counter()
marks: dict[str, float] = {}


def wrap(owner: Any, name: str, label: str) -> None:
    """Replace `owner.name` by a timer adding to `marks[label]` (absent names are skipped)."""
    original: Callable[..., Any] | None = getattr(owner, name, None)
    if original is None:
        return

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            marks[label] = marks.get(label, 0.0) + time.perf_counter() - started

    setattr(owner, name, timed)


def main() -> None:
    sys.argv = ["amber", *sys.argv[1:]]
    started = time.perf_counter()
    from amber.cli import backup_cmd  # noqa: F401  # what the command imports
    from amber.cli import main as cli
    from amber.ops import backups, targets  # noqa: F401

    marks["imports"] = time.perf_counter() - started
    from amber.backup import backuper, locks, repository, writer
    from amber.pool import pool

    wrap(pool.Pool, "open", "pool open")
    wrap(backups, "open_target", "repository open (config, key slot, key cache)")
    wrap(locks.LockTable, "acquire", "lock acquire")
    wrap(locks.Lock, "release", "lock release")
    wrap(repository, "load_index", "index load")
    wrap(backuper._Job, "_plan", "planning (extent maps, unchanged chunks)")
    wrap(backuper._Job, "_write", "planning + pipeline + commit")
    wrap(writer.BackupWriter, "commit", "commit (last pack, index, lock refresh, manifest)")
    wrap(backuper._Job, "_install_base", "base install")
    wrap(backups.Operations, "create_backup", "create_backup (all of the engine)")
    code: int | str | None = 0
    try:
        cli.run()
    except SystemExit as e:
        code = e.code
    marks["total after the interpreter's start"] = time.perf_counter() - START
    print(json.dumps(marks), file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
