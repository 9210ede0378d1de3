"""Volume labels and groups: what recurring jobs select volumes by, without Kubernetes.

A label is `key=value`. A key is a name (letters, digits, `.`, `_`, `-`), optionally after a
`prefix/` as in Kubernetes (`app`, `example.com/tier`); a value is empty or a name. One rule for
every edge: the CLI (`amber volume label`) and job definitions (`selector.matchLabels`) check
labels here.

**Groups.** A volume's groups are the comma-separated names in its `group` label
(`group=nightly` or `group=nightly,offsite`). A volume without a `group` label is in the group
`default`, so a job with `groups: [default]` covers every volume that names no group, as
Longhorn's default group does.
"""

from __future__ import annotations

from collections.abc import Mapping

from amber.domain.errors import InvalidArgument
from amber.domain.names import validate_name

GROUP_LABEL = "group"
DEFAULT_GROUP = "default"
MAX_LABELS = 64


def check_label_key(key: str) -> str:
    """`key` if it is a label key, else InvalidArgument."""
    prefix, _, name = key.rpartition("/")
    if prefix:
        validate_name("label prefix", prefix)
    validate_name("label key", name)
    return key


def check_label_value(key: str, value: str) -> str:
    """`value` if it is a label value (for `key`), else InvalidArgument. The `group` label holds
    comma-separated group names."""
    if key == GROUP_LABEL:
        groups_of({GROUP_LABEL: value})
        return value
    if value:
        validate_name(f"label {key!r} value", value)
    return value


def groups_of(labels: Mapping[str, str]) -> frozenset[str]:
    """The groups a volume with `labels` names (empty: it is in `default` only)."""
    text = labels.get(GROUP_LABEL, "")
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        validate_name("group", name)
    return frozenset(names)


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """All of `labels`, checked."""
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"a volume has at most {MAX_LABELS} labels, not {len(labels)}")
    return {check_label_key(k): check_label_value(k, v) for k, v in labels.items()}
