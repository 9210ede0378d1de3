"""CSI identifiers: self-describing volume and snapshot IDs, and CSI names -> pool names.

IDs (at most 128 bytes, the general CSI size limit):

    amber:v1:vol:<node>:<volume>      a volume on node <node>
    amber:v1:snap:<node>:<snapshot>   a local (reflink) snapshot on node <node>
    amber:v1:grp:<node>:<group>       a group snapshot on node <node> (its members are snaps)

`amber` is the scheme and `v1` the format version; the third field is the kind. Other kinds
(a backup snapshot names its target and backup, `amber:v1:bak:...`) come with their own parser
and never collide with these. `<node>` is the node ID when it is at most 64 bytes, otherwise
its first 55 bytes, `~` and 8 hex digits of its SHA-256 (node IDs never contain `~`).
`<volume>`/`<snapshot>` is the object's pool name.

CSI names (`pvc-0b6f...`, `snapshot-...`, or anything else up to 128 bytes) become pool names
(`amber.domain.names.pool_name`, which backup snapshot keys use too):
the name itself when it is a valid pool name that fits the ID, otherwise a deterministic hashed
name `<hint>--<32 hex digits of SHA-256(name)>`. A valid name that already ends like a hashed
name is hashed too, so two different CSI names never share a pool name (short of a SHA-256
collision) and the same CSI name always maps to the same pool name: idempotency by name holds
across restarts.

Anything that does not parse -- another scheme, another kind, path tricks such as `..` or `/`,
an over-long ID -- is simply "not an ID of ours": `parse_id` returns None and the caller answers
with the code its RPC needs (NOT_FOUND, or OK for a delete).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from amber.domain.errors import InvalidArgument, NotFound
from amber.domain.names import MAX_ID_BYTES, NAME_MAX, validate_name

__all__ = [
    "ForeignObject",
    "IdKind",
    "ObjectRef",
    "format_id",
    "node_segment",
    "parse_id",
    "validate_node_id",
]

SCHEME: Final = "amber"
VERSION: Final = "v1"
MAX_NODE_ID_BYTES: Final = 253
"""Longest node ID accepted (a Kubernetes node name is a DNS subdomain)."""
NODE_SEGMENT_MAX: Final = 64
_NODE_HASH_HEX: Final = 8

_NODE_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NODE_SEGMENT_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]*$")


class IdKind(StrEnum):
    """The kind field of an ID."""

    VOLUME = "vol"
    SNAPSHOT = "snap"
    GROUP = "grp"


class ForeignObject(NotFound):
    """The ID names an object on another node: it does not exist here.

    NOT_FOUND by default; an RPC maps it to another code where the spec asks (a content source
    on another node is INVALID_ARGUMENT, a delete is FAILED_PRECONDITION: answering OK would
    make the CO forget a volume that still exists).
    """

    def __init__(self, what: str, object_id: str, node: str, here: str) -> None:
        super().__init__(
            f"{what} {object_id} lives on node {node!r}, not on this node {here!r}: "
            f"local volumes and snapshots can only be used on their own node"
        )
        self.node = node


@dataclass(frozen=True)
class ObjectRef:
    """A parsed ID: which kind of object, on which node (segment), under which pool name."""

    kind: IdKind
    node: str
    name: str


def validate_node_id(node_id: str) -> str:
    """Return `node_id` if it can be used in IDs and topology, else raise InvalidArgument."""
    if (
        not node_id
        or len(node_id.encode()) > MAX_NODE_ID_BYTES
        or _NODE_ID_RE.match(node_id) is None
    ):
        raise InvalidArgument(
            f"invalid node ID {node_id[:80]!r}: use 1 to {MAX_NODE_ID_BYTES} letters, digits, "
            "'.', '_' and '-', starting with a letter or digit (the Kubernetes node name)"
        )
    return node_id


def node_segment(node_id: str) -> str:
    """The node as it appears in IDs: itself, or shortened with a hash when over 64 bytes."""
    if len(node_id) <= NODE_SEGMENT_MAX:
        return node_id
    digest = hashlib.sha256(node_id.encode()).hexdigest()[:_NODE_HASH_HEX]
    return f"{node_id[: NODE_SEGMENT_MAX - _NODE_HASH_HEX - 1]}~{digest}"


def _prefix(kind: IdKind, segment: str) -> str:
    return f"{SCHEME}:{VERSION}:{kind.value}:{segment}:"


def name_budget(kind: IdKind, segment: str) -> int:
    """Longest pool name that still keeps the ID of `kind` on `segment` within 128 bytes."""
    return min(NAME_MAX, MAX_ID_BYTES - len(_prefix(kind, segment)))


def format_id(kind: IdKind, segment: str, name: str) -> str:
    """The ID of the object `name` of `kind` on the node whose segment is `segment`."""
    text = _prefix(kind, segment) + name
    assert len(text.encode()) <= MAX_ID_BYTES, text
    return text


def parse_id(text: str, kind: IdKind) -> ObjectRef | None:
    """Parse an ID of `kind`; None for anything else (other schemes, kinds, malformed)."""
    if not text or len(text.encode()) > MAX_ID_BYTES:
        return None
    parts = text.split(":")
    if len(parts) != 5 or parts[:3] != [SCHEME, VERSION, kind.value]:
        return None
    segment, name = parts[3], parts[4]
    if len(segment) > NODE_SEGMENT_MAX or _NODE_SEGMENT_RE.match(segment) is None:
        return None
    try:
        validate_name(kind.name.lower(), name)
    except InvalidArgument:
        return None
    return ObjectRef(kind, segment, name)
