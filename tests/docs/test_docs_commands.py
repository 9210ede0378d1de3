"""Every ```sh block of README.md and docs/cli.md works as printed (issue 16).

The blocks of one document run in order, in one shell, as a user would type them, on a
machine whose Amber directories are fresh: the test runs them in a private mount namespace
where /var/lib/amber, /etc/amber, /run/amber, /srv and /mnt are empty temporary directories
(bind mounts), so `amber pool init` makes a fresh default image and nothing of the machine's
own Amber directories is touched. A block the test cannot run (it needs a cluster, or
installs the machine) carries the marker `<!-- docs-test: skip (why) -->` on the line before
its fence.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.blocks import Block, sh_blocks

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "docs/cli.md")
FRESH_DIRS = ("/var/lib/amber", "/etc/amber", "/run/amber", "/srv", "/mnt")
PENDING: dict[str, str] = {}
"""Commands known to fail until another branch lands: command -> why (xfail, not skipped)."""


def _script(blocks: list[Block], results: Path) -> str:
    venv_bin = Path(sys.executable).parent
    lines = [
        "set -u",
        f"export PATH={shlex.quote(str(venv_bin))}:$PATH",
        f"export PYTHONPATH={shlex.quote(str(REPO))}",
        f"cleanup() {{ {shlex.quote(sys.executable)} -m tests.docs.cleanup "
        + " ".join(FRESH_DIRS)
        + "; }",
        "trap cleanup EXIT",
        f"cd {shlex.quote(str(REPO))}",
    ]
    number = 0
    for block in blocks:
        if block.skip:
            continue
        for command in block.commands:
            out = results / f"{number}"
            lines.append(
                f"{{ {command}\n}} >{out}.out 2>{out}.err </dev/null; "
                f"echo $? >{out}.rc; "
                f'[ "$(cat {out}.rc)" = 0 ] || exit 1'
            )
            number += 1
    return "\n".join(lines) + "\n"


def _namespaced(script: Path, fresh: Path) -> list[str]:
    binds = []
    for directory in FRESH_DIRS:
        Path(directory).mkdir(parents=True, exist_ok=True)
        stand_in = fresh / directory.strip("/").replace("/", "-")
        stand_in.mkdir(parents=True)
        binds.append(f"mount --bind {stand_in} {directory}")
    inner = " && ".join([*binds, f"exec bash {script}"])
    return ["unshare", "--mount", "--propagation", "private", "bash", "-c", inner]


def _commands(blocks: list[Block]) -> list[tuple[Block, str]]:
    return [(b, c) for b in blocks if not b.skip for c in b.commands]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_command_block_works_as_printed(document: str, tmp_path: Path) -> None:
    blocks = sh_blocks(REPO / document)
    commands = _commands(blocks)
    assert commands, f"{document} has no runnable ```sh block"
    skipped = [b for b in blocks if b.skip]
    assert len(skipped) <= 2, f"keep the skipped blocks few: {[b.line for b in skipped]}"
    results = tmp_path / "results"
    results.mkdir()
    script = tmp_path / "doc.sh"
    script.write_text(_script(blocks, results))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMBER_")}
    done = subprocess.run(
        _namespaced(script, tmp_path / "fresh"),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    for number, (block, command) in enumerate(commands):
        rc_file = results / f"{number}.rc"
        assert rc_file.exists(), f"{document}: the shell stopped before {command!r}: {done.stderr}"
        if rc_file.read_text().strip() == "0":
            continue
        where = f"{document}:{block.line}"
        message = (
            f"{where}: `{command}` failed (exit {rc_file.read_text().strip()}):\n"
            f"{(results / f'{number}.err').read_text()}{(results / f'{number}.out').read_text()}"
        )
        if command in PENDING:
            pytest.xfail(f"{PENDING[command]}: {message}")
        pytest.fail(message)
    assert done.returncode == 0, done.stderr
