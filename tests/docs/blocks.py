"""The ```sh blocks of a Markdown document, as a user would copy them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SKIP_MARKER = "<!-- docs-test: skip"
"""An HTML comment on the line before a block's fence: the docs test does not run that block
(say why in the comment, e.g. `<!-- docs-test: skip (needs a Kubernetes cluster) -->`)."""


@dataclass(frozen=True)
class Block:
    """One ```sh block: where it starts, its commands (continuation lines joined), skipped?"""

    path: Path
    line: int
    commands: tuple[str, ...]
    skip: str | None


def sh_blocks(path: Path) -> list[Block]:
    """Every ```sh block of `path`, in order."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        if lines[index].strip() != "```sh":
            index += 1
            continue
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index])
            index += 1
        blocks.append(Block(path, start + 1, _commands(body), _skip_reason(lines, start)))
        index += 1
    return blocks


def _skip_reason(lines: list[str], fence: int) -> str | None:
    before = fence - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    if before >= 0 and lines[before].strip().startswith(SKIP_MARKER):
        return lines[before].strip()
    return None


def _commands(body: list[str]) -> tuple[str, ...]:
    commands: list[str] = []
    pending = ""
    for raw in body:
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip() and not line.strip().startswith("#"):
            commands.append(line.strip())
    return tuple(commands)
