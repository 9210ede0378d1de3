"""Names of volumes and snapshots.

A name is what users and Kubernetes choose (`pvc-0b6f…`, `nightly-2026-11-25`). It never becomes
a path component by itself, but it is checked strictly anyway so that it is safe in logs, lock
file names and IDs (see NAME_RULE).
"""

from __future__ import annotations

import re

from amber.domain.errors import InvalidArgument

NAME_MAX = 100
NAME_RULE = (
    f"1 to {NAME_MAX} characters: letters, digits, '.', '_' and '-', "
    "starting with a letter or digit"
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def validate_name(kind: str, name: str) -> str:
    """Return `name` if it is a valid object name, else raise InvalidArgument naming the rule."""
    if not name or len(name) > NAME_MAX or _NAME_RE.match(name) is None or ".." in name:
        shown = name.encode("unicode_escape").decode("ascii")[:120]
        raise InvalidArgument(f"invalid {kind} name {shown!r}: a name is {NAME_RULE}")
    return name
