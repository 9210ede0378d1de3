"""Where a backup snapshot's target comes from: the targets file, or a Kubernetes Secret.

A node finds a target by name in the engine's targets file (`--targets-config`, mounted from
a Secret; see docs/snapshots.md) or in the `secrets` of the call: the snapshotter secret of
CreateSnapshot/DeleteSnapshot/ListSnapshots, the provisioner secret of CreateVolume. Two
secret layouts define a target:

- Amber's: `url` (`s3://bucket/prefix` or `file:///path`), `endpoint`, `region`, `accessKey`,
  `secretKey`, `pathStyle`, `verifyTLS`, `repositoryPassword` (or `password`), optionally
  `encryption: none` instead of a password, and `target` (the name; derived when absent).
- open-local's `s3-config`: `s3URL` (the endpoint), `s3AK`, `s3SK`, `s3ForcePathStyle`,
  `s3DisableSSL`, plus `s3Bucket` (default `amber`), `s3Prefix` and a repository password
  (`repositoryPassword` or `password`; open-local had none, so it must be added).

A target defined by a secret without `target` is named from its endpoint, bucket and prefix
(`s3-<host>-<port>-<bucket>[-<prefix>]`, shortened with a hash): the same Secret in another
cluster yields the same name, which is what cross-cluster snapshot IDs rely on. Targets
learned from secrets are kept in memory only (credentials never go to disk); after a restart a
pending upload waits until the next call brings the secret again (csi-snapshotter repeats
CreateSnapshot until the snapshot is ready).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from amber.backup.crypto import ENCRYPTION_AES, ENCRYPTION_NONE
from amber.backup.keys import Password
from amber.backup.layout import Clock
from amber.backup.repository import Repository
from amber.backup.targets import (
    DEFAULT_CONFIG,
    TargetConfig,
    TargetRuntime,
    open_or_init_repository,
    open_target_repository,
    validate_target_name,
)
from amber.domain.errors import FailedPrecondition, InvalidArgument, NotFound

__all__ = ["TargetAccess", "TargetResolver", "TargetUnknown", "target_from_secrets"]

PASSWORD_KEYS: Final = ("repositoryPassword", "password")
OPEN_LOCAL_KEYS: Final = ("s3URL", "s3AK", "s3SK", "s3ForcePathStyle", "s3DisableSSL")
DEFAULT_BUCKET: Final = "amber"
_DROP_RE: Final = re.compile(r"[^a-z0-9]+")
_TRUE: Final = frozenset({"true", "yes", "on", "1"})


class TargetUnknown(FailedPrecondition):
    """A snapshot names a target this node cannot reach (not configured, no secret)."""


@dataclass(frozen=True)
class TargetAccess:
    """A target this node can open, and the secret values that must never be shown."""

    name: str
    origin: str
    """Where the definition came from (for messages): the targets file or a secret."""
    opener: Callable[[bool], Repository] = field(repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def open(self, *, create: bool = False) -> Repository:
        """The target's repository (with `create`, initialized when there is none)."""
        return self.opener(create)


@dataclass(frozen=True)
class SecretTarget:
    """A target as a secret defines it (the values are secrets: never logged)."""

    name: str
    url: str
    options: Mapping[str, str] = field(repr=False)
    password: str | None = field(repr=False)

    @property
    def secret_values(self) -> tuple[str, ...]:
        values = [self.options.get("secret-key", ""), self.options.get("access-key", "")]
        values.append(self.password or "")
        return tuple(v for v in values if v)


def _first(secrets: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    return next((secrets[k] for k in keys if secrets.get(k)), None)


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE


def _derived_name(endpoint: str, bucket: str, prefix: str) -> str:
    parts = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
    host = f"{parts.hostname or 'aws'}-{parts.port}" if parts.port else parts.hostname or "aws"
    raw = _DROP_RE.sub("-", f"s3-{host}-{bucket}-{prefix}".lower()).strip("-")
    if len(raw) <= 40:
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{raw[:31].rstrip('-')}-{digest}"


def _open_local(secrets: Mapping[str, str]) -> tuple[str, dict[str, str], str]:
    """(url, options, default name) of an open-local `s3-config` Secret."""
    endpoint = secrets["s3URL"].strip()
    if "//" not in endpoint:
        scheme = "http" if _flag(secrets.get("s3DisableSSL")) else "https"
        endpoint = f"{scheme}://{endpoint}"
    bucket = secrets.get("s3Bucket") or DEFAULT_BUCKET
    prefix = (secrets.get("s3Prefix") or "").strip("/")
    options = {"endpoint": endpoint, "path-style": str(_flag(secrets.get("s3ForcePathStyle")))}
    options["path-style"] = options["path-style"].lower()
    if secrets.get("s3AK") or secrets.get("s3SK"):
        options["access-key"] = secrets.get("s3AK", "")
        options["secret-key"] = secrets.get("s3SK", "")
    url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    return url, options, _derived_name(endpoint, bucket, prefix)


_AMBER_OPTIONS: Final = {
    "endpoint": "endpoint",
    "region": "region",
    "accessKey": "access-key",
    "secretKey": "secret-key",
    "pathStyle": "path-style",
    "verifyTLS": "verify-tls",
}


def _amber(secrets: Mapping[str, str]) -> tuple[str, dict[str, str], str]:
    """(url, options, default name) of a Secret in Amber's layout."""
    url = secrets["url"].strip()
    options = {opt: secrets[key] for key, opt in _AMBER_OPTIONS.items() if secrets.get(key)}
    parts = urlsplit(url)
    if parts.scheme == "file":
        default = _DROP_RE.sub("-", f"file-{parts.path}".lower()).strip("-")[:40].strip("-")
    else:
        default = _derived_name(options.get("endpoint", "aws"), parts.netloc, parts.path.strip("/"))
    return url, options, default


def target_from_secrets(secrets: Mapping[str, str]) -> SecretTarget | None:
    """The target a call's secrets define, or None when they define none."""
    if secrets.get("url"):
        url, options, default = _amber(secrets)
    elif secrets.get("s3URL"):
        url, options, default = _open_local(secrets)
    else:
        return None
    name = validate_target_name(secrets.get("target") or default)
    password = _first(secrets, PASSWORD_KEYS)
    unencrypted = (secrets.get("encryption") or "").strip().lower() == ENCRYPTION_NONE
    if password is None and not unencrypted:
        raise InvalidArgument(
            f"the secret defines backup target {name!r} but holds no repository password: add "
            "the key 'repositoryPassword' (or 'encryption: none' for unencrypted backups)"
        )
    return SecretTarget(name, url, options, None if unencrypted else password)


class TargetResolver:
    """Targets by name: from the call's secrets, those learned earlier, the targets file."""

    def __init__(
        self,
        config_path: Path = DEFAULT_CONFIG,
        runtime: TargetRuntime | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._config = TargetConfig(config_path)
        self._runtime = runtime or TargetRuntime()
        self._clock = clock
        self._learned: dict[str, TargetAccess] = {}
        self._mutex = threading.Lock()

    def learn(self, secrets: Mapping[str, str]) -> TargetAccess | None:
        """The target the secrets define (remembered in memory), or None."""
        defined = target_from_secrets(secrets)
        if defined is None:
            return None
        access = TargetAccess(
            defined.name,
            "a Kubernetes secret",
            lambda create: self._open_secret(defined, create),
            defined.secret_values,
        )
        with self._mutex:
            self._learned[defined.name] = access
        return access

    def resolve(self, name: str, secrets: Mapping[str, str] | None = None) -> TargetAccess:
        """The target `name`: TargetUnknown (FAILED_PRECONDITION) if this node has none."""
        validate_target_name(name)
        if secrets:
            defined = self.learn(secrets)
            if defined is not None and defined.name == name:
                return defined
        with self._mutex:
            learned = self._learned.get(name)
        if learned is not None:
            return learned
        try:
            target = self._config.get(name)
        except NotFound as e:
            raise TargetUnknown(
                f"backup target {name!r} is not configured on this node: add it to the targets "
                f"file {self._config.path} or pass its secret with the call ({e.message})"
            ) from None
        return TargetAccess(
            name,
            f"the targets file {self._config.path}",
            lambda create: open_target_repository(
                target, create=create, runtime=self._runtime, clock=self._clock
            ),
        )

    def _open_secret(self, target: SecretTarget, create: bool) -> Repository:
        from amber.blobstore.target import open_store  # imports the S3 client

        store = self._runtime.retrying(open_store(target.url, target.options))
        creds = Password(target.password) if target.password else None
        return open_or_init_repository(
            store,
            creds,
            create=create,
            encryption=ENCRYPTION_AES if creds is not None else ENCRYPTION_NONE,
            scrypt=self._runtime.scrypt,
            clock=self._clock,
        )
