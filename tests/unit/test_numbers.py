"""The rules for numbers and sizes users give: pure, shared by the CLI and CSI."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amber.backup.retention import RetentionPolicy
from amber.domain.errors import InvalidArgument, OutOfRange, SizeTooLarge
from amber.domain.numbers import check_count, check_finite, check_range, check_seconds
from amber.domain.units import MAX_SIZE, PiB, check_size_limit, parse_size


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_never_numbers(value: float) -> None:
    for check in (
        lambda: check_finite("x", value),
        lambda: check_seconds("x", value),
        lambda: check_range("x", value, 1.0, 100.0),
    ):
        with pytest.raises(InvalidArgument, match="x must"):
            check()


def test_counts_and_seconds_have_a_floor() -> None:
    assert check_count("n", 0) == 0
    with pytest.raises(InvalidArgument, match="n must be 0 or more, not -1"):
        check_count("n", -1)
    with pytest.raises(InvalidArgument, match="n must be 3 or less"):
        check_count("n", 4, maximum=3)
    with pytest.raises(InvalidArgument, match="whole number"):
        check_count("n", True)
    with pytest.raises(InvalidArgument, match="grace must be 0 seconds or more"):
        check_seconds("grace", -0.5)
    with pytest.raises(InvalidArgument, match=r"in \(0, 100\]"):
        check_range("subset", 0.0, 0.0, 100.0, low_open=True)


@given(
    st.sampled_from(["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly"]),
    st.integers(max_value=-1),
)
def test_a_negative_retention_count_is_refused(rule: str, count: int) -> None:
    with pytest.raises(InvalidArgument, match=f"keep-{rule.removeprefix('keep_')} must be 0"):
        RetentionPolicy(**{rule: count})  # type: ignore[arg-type]


@pytest.mark.parametrize("tag", ["", " ", "\t"])
def test_an_empty_retention_tag_is_refused(tag: str) -> None:
    with pytest.raises(InvalidArgument, match="keep-tag must not be empty"):
        RetentionPolicy(keep_last=1, keep_tags=frozenset({tag}))


@pytest.mark.parametrize("text", ["10 Gi", "1 0Gi", "10\tGi", "1. 5Gi", "10Gi i"])
def test_sizes_with_spaces_inside_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="no space"):
        parse_size(text)


def test_one_size_limit_for_both_edges() -> None:
    assert parse_size("1Pi") == MAX_SIZE == PiB
    assert check_size_limit(MAX_SIZE) == MAX_SIZE
    with pytest.raises(SizeTooLarge) as written:
        parse_size("2Pi")
    with pytest.raises(SizeTooLarge) as given_bytes:
        check_size_limit(MAX_SIZE + 1)
    for error in (written.value, given_bytes.value):
        assert isinstance(error, OutOfRange)  # CSI: OUT_OF_RANGE (csi/errors.py)
        assert error.exit_code == 2  # CLI: a usage error
        assert "above the maximum volume size (1 PiB)" in error.message


def test_absurdly_long_numbers_are_too_large_not_a_crash() -> None:
    with pytest.raises(SizeTooLarge):
        parse_size("9" * 5000)
    assert parse_size("1." + "5" * 5000 + "Ki") == 1592  # 1.555...Ki, no ValueError
