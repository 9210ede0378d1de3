"""The operations layer: long-running backup work, its durable state, and its rules.

Below every edge (the CLI, the CSI driver, the recurring-job scheduler, the dashboard) and above
the engines (`amber.backup`, `amber.pool`). An edge translates its own names, parameters and
error codes; what an operation does, which locks it takes and what it refuses lives here, once.

Backup snapshots (the CSI driver's VolumeSnapshots of `type: backup` classes) are the first
user: CreateSnapshot takes an instant local reflink snapshot -- the exact point in time -- and
the upload worker (`uploads`) backs it up in the background as an incremental backup. The
snapshot ID names the target and the backup (`handles`), so any node, and any cluster that
knows the target, can restore it (`restores`) or list it. The job table in the pool (`jobs`)
survives restarts; credentials never leave memory (`targets`).

Modules: `handles` (backup snapshot IDs), `targets` (targets file and secrets), `jobs` (the
SQLite job table), `watch` (progress with a cancel switch), `lookup` (finding/removing a backup
in a repository), `uploads` (the worker), `restores` (background restores), `leftovers`
(removing the locks of restores that ended while the target was unreachable), `groups` (group
snapshots uploaded as one unit), `snapshots` (the one object the CSI controller calls),
`locks` (in-process named mutexes), `sizes` (the size of a new volume).
"""

from __future__ import annotations

from amber.ops.handles import BackupRef, format_bak_id, parse_backup_id, snapshot_key
from amber.ops.restores import RestoreWanted
from amber.ops.snapshots import BackupSettings, BackupSnapshots, GroupInfo, SnapshotInfo
from amber.ops.targets import TargetUnknown
from amber.ops.uploads import UploadSettings

__all__ = [
    "BackupRef",
    "BackupSettings",
    "BackupSnapshots",
    "GroupInfo",
    "RestoreWanted",
    "SnapshotInfo",
    "TargetUnknown",
    "UploadSettings",
    "format_bak_id",
    "parse_backup_id",
    "snapshot_key",
]
