"""Running system tools (mkfs, losetup, mount, resize2fs …) with timeouts and clear errors."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Sequence

from amber.domain.errors import SystemFailure, Unavailable

DEFAULT_TIMEOUT = 120.0
log = logging.getLogger(__name__)


def run(argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, check: bool = True) -> str:
    """Run `argv` and return its stdout; on failure raise SystemFailure in the tool's words.

    Each command is logged at DEBUG (`--verbose`); Amber never puts a secret in an argv.
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
        log.debug("%s exited %d: %s", argv[0], done.returncode, done.stderr.strip()[-500:])
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit code {done.returncode}"
        raise SystemFailure(f"{' '.join(argv[:2])} failed: {last}")
    return done.stdout
