"""One way to find a target by name and open its repository, for every edge."""

from __future__ import annotations

from pathlib import Path

import pytest

from amber.backup.targets import Target, TargetConfig, TargetRuntime
from amber.domain.errors import NotFound
from amber.ops import Operations
from amber.ops.targets import TargetResolver, TargetUnknown, open_target, target_from_secrets


def _config(tmp_path: Path) -> Path:
    (tmp_path / "repo").mkdir()
    (tmp_path / "password").write_text("correct horse battery staple\n")
    path = tmp_path / "targets.json"
    TargetConfig(path).add(
        Target("nas", f"file://{tmp_path / 'repo'}", password_file=str(tmp_path / "password"))
    )
    return path


class _Runtimes:
    """A `runtime_for` that records which targets it was asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, target: Target) -> TargetRuntime:
        self.asked.append(target.name)
        return TargetRuntime()


def test_open_target_opens_a_target_of_the_file_by_name(tmp_path: Path) -> None:
    config = _config(tmp_path)
    runtimes = _Runtimes()
    made = open_target("nas", config_path=config, runtime_for=runtimes, create=True)
    again = open_target("nas", config_path=config)
    assert again.config.repository_id == made.config.repository_id
    assert runtimes.asked == ["nas"]
    with pytest.raises(NotFound, match="no backup target named 'tape'"):
        open_target("tape", config_path=config)


def test_the_csi_resolver_finds_the_same_target_and_names_a_missing_one(tmp_path: Path) -> None:
    config = _config(tmp_path)
    made = open_target("nas", config_path=config, create=True)
    resolver = TargetResolver(config)
    assert resolver.resolve("nas").open().config.repository_id == made.config.repository_id
    with pytest.raises(TargetUnknown, match="not configured on this node"):
        resolver.resolve("tape")


@pytest.mark.parametrize(
    ("value", "path_style"), [("true", "true"), ("Yes", "true"), ("0", "false"), ("x", "false")]
)
def test_open_local_flags_read_true_the_way_target_options_do(value: str, path_style: str) -> None:
    found = target_from_secrets(
        {"s3URL": "minio:9000", "s3ForcePathStyle": value, "repositoryPassword": "pw-12345"}
    )
    assert found is not None
    assert found.options["path-style"] == path_style


def test_operations_on_a_targets_file_open_each_target_once(tmp_path: Path) -> None:
    runtimes = _Runtimes()
    ops = Operations.on_targets_file(None, _config(tmp_path), runtime_for=runtimes)
    repo = ops.repository("nas", create=True)
    assert ops.check("nas").ok
    assert ops.repository("nas") is repo
    assert runtimes.asked == ["nas"]
    with pytest.raises(NotFound, match="no backup target named 'tape'"):
        ops.check("tape")
