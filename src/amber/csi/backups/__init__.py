"""Backup snapshots: VolumeSnapshots that live in a backup target (S3 or a directory).

A VolumeSnapshotClass with `type: backup` (and `target: NAME`, or a snapshotter secret that
defines the target) makes CreateSnapshot take an instant local reflink snapshot -- the exact
point in time -- and upload it in the background as an incremental backup (`uploads`). The
snapshot ID names the target and the backup (`handles`), so any node, and any cluster that
knows the target, can restore it with CreateVolume (`restores`) or list it. The job table in
the pool (`jobs`) survives restarts; credentials never leave memory (`targets`).

Modules: `handles` (IDs), `targets` (targets file and secrets), `jobs` (SQLite job table),
`watch` (progress with a cancel switch), `lookup` (finding/removing a backup in a repository),
`uploads` (the worker), `restores` (background restores), `leftovers` (removing the locks of
restores that ended while the target was unreachable), `service` (what the servicer calls).
"""

from __future__ import annotations

from amber.csi.backups.handles import BackupRef, format_bak_id, parse_backup_id, snapshot_key
from amber.csi.backups.restores import RestoreWanted
from amber.csi.backups.service import BackupSettings, BackupSnapshots, GroupInfo, SnapshotInfo
from amber.csi.backups.targets import TargetUnknown
from amber.csi.backups.uploads import UploadSettings

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
