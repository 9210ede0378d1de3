"""Helpers for the engine tests: the real `amber` CLI with a targets file, and writing into
volume images (data, zeros, punched holes) without mounting them."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amber.cli.state import CRASH_ENV
from amber.domain.units import MiB

PASSWORD_TEXT = "engine-test-password-7f3a"
CHUNK = MiB

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


@dataclass
class Cli:
    """Runs `python -m amber --pool POOL` with AMBER_CONFIG pointing at a test targets file."""

    pool: Path
    config: Path

    def env(self, crash_at: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
        env["AMBER_CONFIG"] = str(self.config)
        if crash_at:
            env[CRASH_ENV] = crash_at
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "amber", "--pool", str(self.pool), *args]

    def run(
        self, *args: str, crash_at: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            env=self.env(crash_at),
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.run(*args)
        assert done.returncode == 0, f"amber {' '.join(args)}: {done.stderr}"
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.ok("--output", "json", *args).stdout)

    def volume(self, name: str, size: str = "64Mi") -> Path:
        """Create a block volume; return its image file."""
        created = self.json("volume", "create", name, "--size", size, "--block")
        return Path(created["volume"]["image"])

    def snapshot(self, volume: str, name: str) -> Path:
        """Snapshot a volume; return the snapshot's image file."""
        return Path(self.json("snapshot", "create", volume, name)["snapshot"]["image"])

    def backup(self, snapshot: str, target: str, *args: str) -> Any:
        """`amber backup create` as JSON."""
        return self.json("backup", "create", snapshot, "--target", target, *args)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv("--output", "json", *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
        )


def write_at(image: Path, offset: int, data: bytes) -> None:
    """Write into a volume image (as the volume's user would) and make it durable."""
    fd = os.open(image, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def punch(image: Path, offset: int, length: int) -> None:
    """Deallocate a range (it reads as zeros and becomes a hole), like a TRIM/discard."""
    fd = os.open(image, os.O_WRONLY)
    try:
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        if _libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)) != 0:
            raise OSError(ctypes.get_errno(), "fallocate(PUNCH_HOLE) failed")
        os.fsync(fd)
    finally:
        os.close(fd)


def random_bytes(size: int, seed: int) -> bytes:
    """Incompressible bytes, different for every seed."""
    return random.Random(seed).randbytes(size)


def allocated(path: Path) -> int:
    """Bytes the file maps on disk."""
    return os.stat(path).st_blocks * 512
