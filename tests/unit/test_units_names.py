"""Sizes and names: pure rules, property-tested."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amber.domain.errors import InvalidArgument
from amber.domain.names import NAME_MAX, validate_name
from amber.domain.units import GiB, KiB, MiB, format_size, parse_size, round_up


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1),
        ("10Gi", 10 * GiB),
        ("10G", 10 * 1000**3),
        ("512Mi", 512 * MiB),
        ("1.5Gi", GiB + GiB // 2),
        ("4k", 4000),
        ("4Ki", 4 * KiB),
        (" 2Ti ", 2 * 1024 * GiB),
    ],
)
def test_parse_size_follows_kubernetes_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["", "Gi", "-1Gi", "0", "1.Gi", "1 GB", "10 Gi", "10gi", "1e9", "1Xi", "nan"]
)
def test_parse_size_rejects_nonsense(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_size(text)


@given(
    st.integers(min_value=1, max_value=1024**4), st.sampled_from(["", "Ki", "Mi", "Gi", "K", "M"])
)
def test_parse_size_round_trips_integers(number: int, suffix: str) -> None:
    factor = {"": 1, "Ki": KiB, "Mi": MiB, "Gi": GiB, "K": 1000, "M": 1000**2}[suffix]
    if number * factor <= 1024**5:
        assert parse_size(f"{number}{suffix}") == number * factor


@given(st.integers(min_value=0, max_value=2**50), st.sampled_from([1, 512, MiB]))
def test_round_up_is_the_smallest_multiple_not_below(value: int, multiple: int) -> None:
    rounded = round_up(value, multiple)
    assert rounded % multiple == 0
    assert value <= rounded < value + multiple


def test_format_size() -> None:
    assert format_size(0) == "0 B"
    assert format_size(1536 * MiB) == "1.5 GiB"


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,60}", fullmatch=True))
def test_valid_names_pass(name: str) -> None:
    assert validate_name("volume", name) == name


@given(st.text(min_size=1, max_size=200))
def test_names_are_never_path_tricks(name: str) -> None:
    safe = (
        name.isascii()
        and name[0].isalnum()
        and len(name) <= NAME_MAX
        and ".." not in name
        and all(c.isalnum() or c in "._-" for c in name)
    )
    if safe:
        assert validate_name("volume", name) == name
    else:
        with pytest.raises(InvalidArgument, match="invalid volume name") as info:
            validate_name("volume", name)
        assert "\n" not in str(info.value)
