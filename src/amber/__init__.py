"""Amber: node-local volumes with reflink snapshots and encrypted incremental backups."""

__version__ = "0.1.0.dev0"
