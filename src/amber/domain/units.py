"""Byte sizes as users write them, with Kubernetes' meaning of the suffixes.

`K M G T P` are powers of 1000 and `Ki Mi Gi Ti Pi` powers of 1024, as in a PVC's
`resources.requests.storage`. A bare number is bytes. Lower-case `k` is accepted for kilo.
"""

from __future__ import annotations

import re

from amber.domain.errors import InvalidArgument

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

_SUFFIXES = {
    "": 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "P": 1000**5,
    "Ki": KiB,
    "Mi": MiB,
    "Gi": GiB,
    "Ti": TiB,
    "Pi": 1024 * TiB,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKMGTP]i?)?\s*$")

# Far beyond any real volume, small enough that arithmetic and file offsets stay sane.
MAX_SIZE = 1024 * TiB


def parse_size(text: str) -> int:
    """Parse `10Gi`, `500M`, `1.5Gi` or `1048576` into bytes; raise InvalidArgument otherwise."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise InvalidArgument(
            f"invalid size {text!r}: use a number with an optional unit "
            "K, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti (powers of 1024), e.g. 10Gi"
        )
    number: str = match.group(1)
    suffix: str = match.group(2) or ""
    multiplier: int | None = _SUFFIXES.get(suffix)
    if multiplier is None:
        raise InvalidArgument(f"invalid size unit in {text!r}")
    if "." in number:
        whole, frac = number.split(".")
        value = int(whole) * multiplier + int(frac) * multiplier // int(10 ** len(frac))
    else:
        value = int(number) * multiplier
    if value <= 0:
        raise InvalidArgument(f"size {text!r} must be greater than zero")
    if value > MAX_SIZE:
        raise InvalidArgument(f"size {text!r} is larger than the maximum of 1 PiB")
    return value


def round_up(value: int, multiple: int) -> int:
    """Round `value` up to a multiple of `multiple`."""
    return int(-(-value // multiple) * multiple)


def format_size(value: int) -> str:
    """Format bytes for people: `10.0 GiB`, `512.0 MiB`, `0 B`."""
    if value < KiB:
        return f"{value} B"
    for unit, size in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    raise AssertionError("unreachable")
