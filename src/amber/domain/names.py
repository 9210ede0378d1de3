"""Names of volumes and snapshots, and how a longer name (a CSI name) becomes one.

A name is what users and Kubernetes choose (`pvc-0b6f…`, `nightly-2026-11-25`). It never becomes
a path component by itself, but it is checked strictly anyway so that it is safe in logs, lock
file names and IDs (see NAME_RULE).
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from amber.domain.errors import InvalidArgument

NAME_MAX = 100
NAME_RULE = (
    f"1 to {NAME_MAX} characters: letters, digits, '.', '_' and '-', "
    "starting with a letter or digit"
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_ID_BYTES: Final = 128
"""Longest ID Amber hands out (the CSI general size limit for strings)."""
MAX_CSI_NAME_BYTES: Final = 128
"""Longest CSI name accepted (the CSI general size limit; Kubernetes names are ~40 bytes)."""
_HASH_HEX: Final = 32
_HASHED_SUFFIX_RE: Final = re.compile(r"--[0-9a-f]{32}$")
_HINT_DROP_RE: Final = re.compile(r"[^A-Za-z0-9_-]+")


def validate_name(kind: str, name: str) -> str:
    """Return `name` if it is a valid object name, else raise InvalidArgument naming the rule."""
    if not name or len(name) > NAME_MAX or _NAME_RE.match(name) is None or ".." in name:
        shown = name.encode("unicode_escape").decode("ascii")[:120]
        raise InvalidArgument(f"invalid {kind} name {shown!r}: a name is {NAME_RULE}")
    return name


def pool_name(csi_name: str, budget: int) -> str:
    """The pool name for a CSI name: itself when valid and short enough, else hashed."""
    if len(csi_name.encode()) > MAX_CSI_NAME_BYTES:
        raise InvalidArgument(
            f"name {csi_name[:40]!r}... is longer than the CSI limit of {MAX_CSI_NAME_BYTES} bytes"
        )
    if len(csi_name) <= budget and _HASHED_SUFFIX_RE.search(csi_name) is None:
        try:
            return validate_name("volume", csi_name)
        except InvalidArgument:
            pass
    digest = hashlib.sha256(csi_name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_HEX]
    room = budget - len(digest) - 2
    hint = _HINT_DROP_RE.sub("-", csi_name).lstrip("-_")[: max(room, 0)].rstrip("-_")
    return f"{hint or 'x'}--{digest}"
