"""Pagination of ListVolumes and ListSnapshots.

A page token is a cursor, not an offset: it names the last entry returned (by its sort key), so
a page after it starts right there even when entries were added or deleted in between -- no
entry is returned twice. The token carries a short checksum so that a token Amber did not make
(`"invalid-token"`) is refused with ABORTED, as the spec requires, instead of being read as a
name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from amber.domain.errors import InvalidArgument

__all__ = ["BadToken", "page"]

_T = TypeVar("_T")
_CHECK_HEX: Final = 8


class BadToken(InvalidArgument):
    """A `starting_token` Amber did not hand out (ABORTED in the List RPCs)."""


def _check(key: str) -> str:
    return hashlib.sha256(f"amber-page:{key}".encode()).hexdigest()[:_CHECK_HEX]


def make_token(key: str) -> str:
    encoded = base64.urlsafe_b64encode(key.encode()).decode("ascii").rstrip("=")
    return f"{encoded}.{_check(key)}"


def read_token(token: str) -> str:
    """The sort key a token was made from; BadToken when it is not one of ours."""
    encoded, dot, check = token.rpartition(".")
    if not dot or not encoded or len(token) > 512:
        raise BadToken(f"starting_token {token[:40]!r} was not issued by this plugin")
    try:
        key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as e:
        raise BadToken(f"starting_token {token[:40]!r} was not issued by this plugin") from e
    if _check(key) != check:
        raise BadToken(f"starting_token {token[:40]!r} was not issued by this plugin")
    return key


def page(
    items: Sequence[_T], key: Callable[[_T], str], starting_token: str, max_entries: int
) -> tuple[list[_T], str]:
    """One page of `items` (any order; sorted here by `key`) and the token of the next page."""
    if max_entries < 0:
        raise InvalidArgument(f"max_entries must not be negative, not {max_entries}")
    ordered = sorted(items, key=key)
    if starting_token:
        after = read_token(starting_token)
        ordered = [item for item in ordered if key(item) > after]
    if max_entries == 0 or len(ordered) <= max_entries:
        return list(ordered), ""
    chosen = list(ordered[:max_entries])
    return chosen, make_token(key(chosen[-1]))
