"""Byte sizes as users write them, with Kubernetes' meaning of the suffixes.

`K M G T P` are powers of 1000 and `Ki Mi Gi Ti Pi` powers of 1024, as in a PVC's
`resources.requests.storage`. A bare number is bytes. Lower-case `k` is accepted for kilo.
Spaces around the size are ignored; a space inside it (`10 Gi`) is refused, as Kubernetes
refuses it: `10 Gi` could be a typo for `10Gi` as well as for `10 GiB` or `100Gi`.

The largest size is `MAX_SIZE` (1 PiB), checked by `check_size_limit` for every size that comes
from a person or a CSI request, whether written (`parse_size`) or given in bytes (a capacity
range): the CLI exits 2 and CSI answers OUT_OF_RANGE, with the same message.
"""

from __future__ import annotations

import re

from amber.domain.errors import InvalidArgument, SizeTooLarge

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB
PiB = 1024 * TiB

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
    "Pi": PiB,
}
_SIZE_RE = re.compile(r"^(\d+)(?:\.(\d+))?([kKMGTP]i?)?$", re.ASCII)
# Digits that matter: 1 PiB has 16, a byte's fraction needs fewer than 20 (int() of thousands of
# digits raises ValueError in Python 3.11+, so longer numbers never reach it).
_DIGITS = 24

MAX_SIZE = PiB
"""The largest volume: far beyond any real one, small enough that arithmetic and file offsets
stay sane (ext4 and XFS images, loop devices and FIEMAP all work well below 8 EiB)."""


def check_size_limit(value: int, shown: str | None = None) -> int:
    """`value` bytes, or SizeTooLarge (exit 2 in the CLI, OUT_OF_RANGE in CSI) above MAX_SIZE.

    `shown` is how the size was written, for the message (default: the bytes, in binary units).
    """
    if value > MAX_SIZE:
        text = shown if shown is not None else format_size(value)
        raise SizeTooLarge(f"size {text} is above the maximum volume size (1 PiB)")
    return value


def _quoted(text: str) -> str:
    """`text` for a message: quoted, and cut short when long (it may be anything)."""
    text = text.strip()
    return repr(text if len(text) <= 40 else f"{text[:37]}...")


def parse_size(text: str) -> int:
    """Parse `10Gi`, `500M`, `1.5Gi` or `1048576` into bytes; raise InvalidArgument otherwise."""
    match = _SIZE_RE.match(text.strip())
    if match is None:
        raise InvalidArgument(
            f"invalid size {_quoted(text)}: use a number with an optional unit right after it "
            "(no space): K, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti (powers of 1024), e.g. 10Gi"
        )
    whole: str = match.group(1).lstrip("0") or "0"
    frac: str = (match.group(2) or "")[:_DIGITS]
    multiplier = _SUFFIXES[match.group(3) or ""]
    if len(whole) > _DIGITS:
        return check_size_limit(MAX_SIZE + 1, _quoted(text))
    value = int(whole) * multiplier
    if frac:
        value += int(frac) * multiplier // 10 ** len(frac)
    if value <= 0:
        raise InvalidArgument(f"size {_quoted(text)} must be greater than zero")
    return check_size_limit(value, _quoted(text))


def round_up(value: int, multiple: int) -> int:
    """Round `value` up to a multiple of `multiple`."""
    return int(-(-value // multiple) * multiple)


def format_size(value: int) -> str:
    """Format bytes for people: `10.0 GiB`, `512.0 MiB`, `0 B`."""
    if value < KiB:
        return f"{value} B"
    for unit, size in (("PiB", PiB), ("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    raise AssertionError("unreachable")


# -- durations ---------------------------------------------------------------------------------

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)"
_DURATION_RE = re.compile(rf"^(?:{_DURATION_PART})+$", re.ASCII)
_DURATION_PARTS = re.compile(_DURATION_PART, re.ASCII)
_BARE_SECONDS_RE = re.compile(r"^\d+(?:\.\d+)?$", re.ASCII)
MAX_DURATION = 100 * 365 * 86400.0
"""The longest duration accepted (a century): longer is a typo, and stays a finite float."""


def parse_duration(text: str, *, allow_zero: bool = False) -> float:
    """Seconds from `90s`, `15m`, `1h`, `1h30m`, `7d`, `2w`, `500ms` or a bare number of
    seconds (`90`, `2.5`). Negative durations are refused, and zero unless `allow_zero`;
    InvalidArgument (exit 2 in the CLI) says how to write one."""
    value = text.strip()
    if _BARE_SECONDS_RE.match(value):
        seconds = float(value)
    elif _DURATION_RE.match(value):
        seconds = sum(
            float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PARTS.findall(value)
        )
    else:
        raise InvalidArgument(
            f"invalid duration {_quoted(text)}: use a finite number of seconds, or a number "
            "with a unit right after it: ms, s, m, h, d, w (e.g. 90s, 15m, 1h30m, 7d)"
        )
    if seconds > MAX_DURATION:
        raise InvalidArgument(f"duration {_quoted(text)} is longer than a century")
    if seconds == 0 and not allow_zero:
        raise InvalidArgument(f"duration {_quoted(text)} must be greater than zero")
    return seconds
