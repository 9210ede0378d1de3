"""Node pool settings (amber.pool.bootstrap.parse_source): pure parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from amber.domain.errors import InvalidArgument
from amber.domain.units import GiB, MiB
from amber.pool.bootstrap import PoolSource, SourceKind, parse_source


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("image:20Gi", PoolSource(SourceKind.IMAGE, size=20 * GiB)),
        (" image:512Mi\n", PoolSource(SourceKind.IMAGE, size=512 * MiB)),
        ("dir", PoolSource(SourceKind.DIR)),
        ("dir\n", PoolSource(SourceKind.DIR)),
        ("device:/dev/nvme1n1", PoolSource(SourceKind.DEVICE, device=Path("/dev/nvme1n1"))),
        (
            "device:/dev/disk/by-id/../../sdb",
            PoolSource(SourceKind.DEVICE, device=Path("/dev/sdb")),
        ),
    ],
)
def test_settings_parse_and_print_back(text: str, expected: PoolSource) -> None:
    source = parse_source(text)
    assert source == expected
    assert parse_source(str(source)) == source


@pytest.mark.parametrize(
    "text",
    [
        "",
        "image",
        "image:",
        "image:lots",
        "dir:/srv",
        "device:sdb",
        "disk:/dev/sdb",
        "lvm",
        "device:/dev/../etc/x",
    ],
)
def test_bad_settings_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_source(text)
