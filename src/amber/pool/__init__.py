"""Volumes, snapshots, clones and expansion on a reflink pool.

A volume is a sparse image file; a snapshot is a reflink copy of it, taken with the volume's
filesystem frozen; clones and restores are reflink copies into new volumes. The metadata lives
in SQLite inside the pool, and every multi-step operation is journaled so that a crash at any
point is finished or undone the next time the pool is opened.
"""

from amber.pool.context import PoolSettings
from amber.pool.pool import DEFAULT_IMAGE, DEFAULT_POOL, Pool, ReflinkProbe, default_image
from amber.pool.volumes import VolumeRequest

__all__ = [
    "DEFAULT_IMAGE",
    "DEFAULT_POOL",
    "Pool",
    "PoolSettings",
    "ReflinkProbe",
    "VolumeRequest",
    "default_image",
]
