"""Small helpers shared by the object codecs: strict JSON field access, base64, varints.

Every decoder treats its input as untrusted bytes: a field of the wrong type, a bad base64 string
or a truncated varint is `Corrupt`, naming the object, never a `KeyError` or `TypeError`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from amber.domain.errors import Corrupt

T = TypeVar("T")


def dumps(document: dict[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def loads_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse a JSON object or raise Corrupt."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Corrupt(f"{what} is not valid JSON: {e}") from e
    if not isinstance(document, dict):
        raise Corrupt(f"{what} is not a JSON object")
    return document


def get(document: dict[str, Any], name: str, kind: type[T], what: str) -> T:
    """`document[name]`, which must be a `kind` (bool is never accepted as int)."""
    value = document.get(name)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # type: ignore[return-value]
    if not ok:
        raise Corrupt(f"{what}: field {name!r} is missing or not a {kind.__name__}")
    return value  # type: ignore[return-value]


def get_optional_str(document: dict[str, Any], name: str, what: str) -> str | None:
    """`document[name]` as a string, or None when absent or null."""
    if document.get(name) is None:
        return None
    return get(document, name, str, what)


def b64encode(data: bytes) -> str:
    """Standard base64 as text."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str) -> bytes:
    """Strict base64 decoding; bad input is Corrupt."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise Corrupt(f"{what}: invalid base64 data") from e


def write_varint(out: bytearray, value: int) -> None:
    """Append an unsigned LEB128 varint."""
    if value < 0:
        raise ValueError("varints are unsigned")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def read_varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """Read an unsigned LEB128 varint at `pos`; return (value, next position)."""
    value = 0
    shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise Corrupt(f"{what}: truncated or oversized varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos
