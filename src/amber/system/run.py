"""Running system tools (mkfs, losetup, mount, resize2fs …) with timeouts and clear errors."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Sequence

from amber.domain.errors import SystemFailure, Unavailable

DEFAULT_TIMEOUT = 120.0
NOISE = ("dmesg(1) may have more information", "resize2fs 1.", "e2fsck 1.")
"""Lines of tool output that say nothing about the failure (mount's hint, version banners)."""
DETAIL_LINES = 2
log = logging.getLogger(__name__)


class ToolFailed(SystemFailure):
    """A tool exited with a code its caller does not accept; `returncode` and `stderr` kept."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        super().__init__(f"{' '.join(argv[:2])} failed (exit {returncode}): {_detail(stderr)}")
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


def _detail(output: str) -> str:
    """The tool's own words in one line: its last meaningful lines of output."""
    lines = [line.strip() for line in output.strip().splitlines()]
    lines = [line for line in lines if line and not line.startswith(NOISE)]
    return "; ".join(lines[-DETAIL_LINES:]) or "no message"


def run(argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, check: bool = True) -> str:
    """Run `argv` and return its stdout; on failure raise ToolFailed in the tool's words.

    Each command is logged at DEBUG (`--verbose`) with, when it fails, its exit code and
    output; Amber never puts a secret in an argv.
    """
    log.debug("running %s", shlex.join(argv))
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as e:
        raise Unavailable(f"{argv[0]} is not installed (needed by Amber)") from e
    except subprocess.TimeoutExpired as e:
        raise SystemFailure(f"{argv[0]} did not finish within {timeout:.0f}s") from e
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        log.debug("%s exited %d: %s", argv[0], done.returncode, output[-2000:])
    if check and done.returncode != 0:
        raise ToolFailed(argv, done.returncode, done.stderr or done.stdout)
    return done.stdout
