"""The operations layer: long-running backup work, its durable state, and its rules.

Below every edge (the CLI, the CSI driver, the recurring-job scheduler, the dashboard) and above
the engines (`amber.backup`, `amber.pool`). An edge translates its own names, parameters and
error codes; what an operation does, which locks it takes and what it refuses lives here, once.

The API the edges call (synchronous: an edge that must not block runs it in a thread):

- `Operations(pool, open_repository)` (`amber.ops.backups`): backup operations on targets by
  name, each with its locking rule in its docstring --
  `create_backup(source, target, *, take_snapshot, labels, tags, full, progress)`,
  `restore_backup(target, backup_id, new_volume, *, size, allow_partial, progress)`,
  `delete_backup(target, backup_id)` (refused while a restore of the backup runs anywhere),
  `check(target, read_data=False, ...)` (shared lock), `prune(target, policy, ...)`,
  `sweep(target)` (a prune that removes no backup) and `repair(target)` (exclusive lock). The
  same rules over an already open repository, for the CSI driver: `remove_backup`,
  `check_repository`, `prune_repository_locked`, `sweep_repository_locked`.
  `Operations.on_targets_file(pool, config_path, runtime_for=...)` opens the targets of a
  targets file (what the CLI, the jobs and the dashboard use).
- `open_target(name, config_path=..., runtime_for=..., create=False)` (`amber.ops.targets`):
  the opened repository of a target of the targets file, by name. `TargetResolver` also finds
  targets that Kubernetes secrets define (the CSI driver).
- `RepositoryOpener`: what `Operations` opens targets with (`open(target, create=False)`).

Backup snapshots (the CSI driver's VolumeSnapshots of `type: backup` classes) run on the job
engine here: CreateSnapshot takes an instant local reflink snapshot -- the exact point in time
-- and the upload worker (`uploads`) backs it up in the background as an incremental backup.
The snapshot ID names the target and the backup (`handles`), so any node, and any cluster that
knows the target, can restore it (`restores`) or list it. The job table in the pool (`jobs`)
survives restarts; credentials never leave memory (`targets`).

Modules: `backups` (the operations and their rules), `handles` (backup snapshot IDs),
`targets` (targets file and secrets), `jobs` (the SQLite job table), `watch` (progress with a
cancel switch), `lookup` (finding a backup in a repository), `uploads` (the worker),
`restores` (background restores), `leftovers` (removing the locks of restores that ended
while the target was unreachable), `groups` (group snapshots uploaded as one unit),
`snapshots` (the one object the CSI controller calls), `locks` (in-process named mutexes),
`sizes` (the size of a new volume). Import them by name: this package imports only what
`Operations` needs, so a command pays for no more.
"""

from __future__ import annotations

from amber.ops.backups import Operations, RepositoryOpener
from amber.ops.targets import open_target

__all__ = ["Operations", "RepositoryOpener", "open_target"]
