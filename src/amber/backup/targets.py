"""Named backup targets: where backups go, how to reach it, and how to unlock it.

A target is a name (`nas`, `s3-eu`) for a URL (`file:///mnt/nas/amber`, `s3://bucket/prefix`),
its store options (endpoint, region, TLS…), and the credential that opens its repository (a
password file or a key file; or none, for an explicitly unencrypted repository). Definitions
live in one JSON file, by default `/etc/amber/targets.json`, mode 0600:

```json
{"version": 1, "targets": {"nas": {
    "url": "s3://backups/cluster-a",
    "options": {"endpoint": "https://minio:9000", "access-key": "AKIA…", "path-style": "true"},
    "secret_key_file": "nas.secret-key",
    "encryption": "aes-256-gcm", "password_file": "nas.password", "key_file": null}}}
```

**Secrets are never stored in the file, only referenced by path**: `secret_key_file` (the S3
secret key), the `credentials-file` option (an AWS-style credentials file), `password_file`
and `key_file`. A relative path is taken relative to the directory of the config file, so the
node daemon can mount one Kubernetes Secret holding `targets.json` beside the secret files and
use it unchanged. The access key *id* is stored (it identifies, it does not authenticate) but
is never shown either. Secret file contents are read when a target is opened and handed to the
store or the key derivation, never logged, printed or put in an error message.

Every remote call of an opened target goes through `RetryingStore`, and each attempt is bounded
by the store's own timeouts (S3 connect/read timeouts, the file store's per-call timeout).
Commands (`TargetRuntime.for_commands`) give a target that has not answered yet a short budget
(`FIRST_CONTACT_BUDGET`, 10 s): a wrong endpoint or a target that is down fails in seconds with
one line saying which target and why. Once it has answered, an outage is retried with backoff
for up to the *retry budget* (`OUTAGE_BUDGET`, 120 s: long enough for an S3 gateway to restart
or an NFS server to fail over), each pause announced through `TargetRuntime.on_retry`. The
budget is set per target by the stored option `retry-budget` (seconds) and for one command by
the environment variable `AMBER_RETRY_BUDGET`, which wins. The plain `TargetRuntime()` (the CSI
node) keeps a short budget per call (4 attempts within 30 s): its background uploads retry by
themselves, and a gRPC call must answer within the sidecar's timeout.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amber.backup.config import DEFAULT_CHUNK_SIZE
from amber.backup.crypto import ENCRYPTION_AES, ENCRYPTION_NONE
from amber.backup.keycache import DEFAULT_KEY_CACHE_DIR, KeyCache
from amber.backup.keys import Credentials, KeyFile, Password, ScryptParams
from amber.backup.layout import BACKUPS_PREFIX, Clock
from amber.backup.repository import Repository, init_repository, open_repository, read_config
from amber.blobstore.base import BlobStore
from amber.blobstore.retry import RetryingStore, RetryWait
from amber.blobstore.target import ProbeResult, probe
from amber.blobstore.target import open_store as open_url
from amber.domain.errors import (
    AlreadyExists,
    AmberError,
    Corrupt,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from amber.domain.units import parse_duration

DEFAULT_CONFIG = Path("/etc/amber/targets.json")
KEY_CACHE_ENV = "AMBER_KEY_CACHE"
CONFIG_VERSION = 1
TARGET_NAME_RULE = "1 to 63 characters: lowercase letters, digits and '-', not at either end"
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# Store options that may be stored in the config file (none of them is a secret).
STORED_OPTIONS = frozenset(
    {
        "endpoint",
        "region",
        "path-style",
        "verify-tls",
        "ca-bundle",
        "access-key",
        "credentials-file",
        "profile",
        "connect-timeout",
        "read-timeout",
        "timeout",
        "retry-budget",
    }
)
RETRY_BUDGET_OPTION = "retry-budget"
RETRY_BUDGET_ENV = "AMBER_RETRY_BUDGET"
OUTAGE_BUDGET = 120.0
"""Seconds a command retries a target that has answered before giving up on an outage."""
FIRST_CONTACT_BUDGET = 10.0
"""Seconds a command tries to reach a target that has not answered yet."""
_PATH_OPTIONS = ("ca-bundle", "credentials-file")


def validate_target_name(name: str) -> str:
    """Return `name` if it is a valid target name, else raise InvalidArgument."""
    if _NAME_RE.match(name) is None:
        shown = name.encode("unicode_escape").decode("ascii")[:80]
        raise InvalidArgument(f"invalid target name {shown!r}: a target name is {TARGET_NAME_RULE}")
    return name


@dataclass(frozen=True)
class Target:
    """One target definition as stored (secrets only by path)."""

    name: str
    url: str
    options: Mapping[str, str] = field(default_factory=dict)
    secret_key_file: str | None = None
    encryption: str = ENCRYPTION_AES
    password_file: str | None = None
    key_file: str | None = None

    def validate(self) -> None:
        """Raise InvalidArgument for an inconsistent definition."""
        validate_target_name(self.name)
        unknown = sorted(set(self.options) - STORED_OPTIONS)
        if unknown:
            raise InvalidArgument(
                f"target {self.name!r}: option(s) {', '.join(unknown)} cannot be stored "
                "(give secrets as files: --secret-key-file, --credentials-file)"
            )
        if self.encryption not in (ENCRYPTION_AES, ENCRYPTION_NONE):
            raise InvalidArgument(f"target {self.name!r}: unknown encryption {self.encryption!r}")
        _target_budget(self)
        given = [f for f in (self.password_file, self.key_file) if f]
        if self.encryption == ENCRYPTION_NONE and given:
            raise InvalidArgument("--no-encryption takes no password or key file")
        if self.encryption == ENCRYPTION_AES and len(given) > 1:
            raise InvalidArgument(
                f"target {self.name!r} takes one of --password-file or --key-file, not both "
                "(or neither: the password is asked for when the target is used)"
            )
        if self.secret_key_file and not self.options.get("access-key"):
            raise InvalidArgument("--secret-key-file needs --access-key")
        if self.options.get("access-key") and not self.secret_key_file:
            raise InvalidArgument("--access-key needs --secret-key-file")

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "url": self.url,
            "options": dict(sorted(self.options.items())),
            "secret_key_file": self.secret_key_file,
            "encryption": self.encryption,
            "password_file": self.password_file,
            "key_file": self.key_file,
        }

    def public(self) -> dict[str, Any]:
        """What `target list` shows: no secret, no access key id, paths of secret files only."""
        options = {k: v for k, v in self.options.items() if k != "access-key"}
        if "access-key" in self.options:
            options["access-key"] = "(set)"
        return {
            "name": self.name,
            "url": self.url,
            "options": dict(sorted(options.items())),
            "encryption": self.encryption,
            "credential": "password file"
            if self.password_file
            else "key file"
            if self.key_file
            else "asked"
            if self.asks_password
            else "none",
        }

    @property
    def asks_password(self) -> bool:
        """An encrypted target with no password or key file: whoever uses it supplies the
        password (`TargetRuntime.password`: AMBER_PASSWORD, AMBER_PASSWORD_FILE, a prompt)."""
        return self.encryption == ENCRYPTION_AES and not (self.password_file or self.key_file)


def _target_from_json(name: str, document: Any, where: Path) -> Target:
    what = f"target {name!r} in {where}"
    if not isinstance(document, dict) or not isinstance(document.get("url"), str):
        raise Corrupt(f"{what} is not an object with a 'url'")
    options = document.get("options") or {}
    if not isinstance(options, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in options.items()
    ):
        raise Corrupt(f"{what}: 'options' must map strings to strings")

    def optional(key: str) -> str | None:
        value = document.get(key)
        if value is not None and not isinstance(value, str):
            raise Corrupt(f"{what}: {key!r} must be a string")
        return value

    target = Target(
        name=name,
        url=document["url"],
        options=options,
        secret_key_file=optional("secret_key_file"),
        encryption=optional("encryption") or ENCRYPTION_AES,
        password_file=optional("password_file"),
        key_file=optional("key_file"),
    )
    try:
        target.validate()
    except InvalidArgument as e:
        raise Corrupt(f"{what}: {e.message}") from e
    return target


class TargetConfig:
    """The targets file: read, change and write it back atomically (mode 0600)."""

    def __init__(self, path: Path = DEFAULT_CONFIG) -> None:
        self.path = path

    def load(self) -> dict[str, Target]:
        """Every target by name; an absent file means no targets."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise PermissionDenied(f"cannot read the targets file {self.path}: {e.strerror}") from e
        try:
            document = json.loads(text)
        except json.JSONDecodeError as e:
            raise Corrupt(f"the targets file {self.path} is not valid JSON: {e}") from e
        if not isinstance(document, dict) or document.get("version") != CONFIG_VERSION:
            raise Corrupt(f"the targets file {self.path} is not version {CONFIG_VERSION}")
        targets = document.get("targets") or {}
        if not isinstance(targets, dict):
            raise Corrupt(f"the targets file {self.path}: 'targets' must be an object")
        return {name: _target_from_json(name, t, self.path) for name, t in targets.items()}

    def get(self, name: str) -> Target:
        """One target; NotFound names the file and lists the known ones."""
        validate_target_name(name)
        targets = self.load()
        if name not in targets:
            known = ", ".join(sorted(targets)) or "none"
            raise NotFound(
                f"no backup target named {name!r} in {self.path} (known: {known}); add one with "
                "`amber target add`"
            )
        return self.resolved(targets[name])

    def resolved(self, target: Target) -> Target:
        """The target with relative secret and option paths made absolute (config's dir)."""
        base = self.path.parent

        def absolute(value: str | None) -> str | None:
            return None if value is None else str(base / value)

        options = dict(target.options)
        for key in _PATH_OPTIONS:
            if key in options:
                options[key] = str(base / options[key])
        return dataclasses.replace(
            target,
            options=options,
            secret_key_file=absolute(target.secret_key_file),
            password_file=absolute(target.password_file),
            key_file=absolute(target.key_file),
        )

    def add(self, target: Target, *, replace: bool = False) -> None:
        """Store a new target (AlreadyExists unless `replace`)."""
        target.validate()
        with self._locked() as targets:
            if target.name in targets and not replace:
                raise AlreadyExists(
                    f"backup target {target.name!r} already exists in {self.path}; remove it "
                    "first or choose another name"
                )
            targets[target.name] = target

    def remove(self, name: str) -> Target:
        """Delete a target definition (its repository is left alone)."""
        validate_target_name(name)
        with self._locked() as targets:
            if name not in targets:
                raise NotFound(f"no backup target named {name!r} in {self.path}")
            return targets.pop(name)

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Target]]:
        """Load under an exclusive flock, let the body change the dict, write it back."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            targets = self.load()
            yield targets
            self._write(targets)
        finally:
            os.close(fd)

    def _write(self, targets: Mapping[str, Target]) -> None:
        document = {
            "version": CONFIG_VERSION,
            "targets": {name: targets[name].to_json() for name in sorted(targets)},
        }
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (json.dumps(document, indent=2) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


# -- opening a target --------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetRuntime:
    """How hard to try a target before giving up (read once at the edge)."""

    attempts: int = 4
    """Tries per remote call at most (only 'unavailable' failures are retried)."""
    base_delay: float = 0.25
    """First pause between tries; it doubles each time."""
    max_delay: float = 4.0
    """Longest pause between tries."""
    deadline: float = 30.0
    """The retry budget: no new try starts this many seconds after a call began (a target's
    `retry-budget` option replaces it)."""
    first_contact_deadline: float | None = None
    """The budget of calls until the target has answered once (None: `deadline`)."""
    on_retry: Callable[[RetryWait], None] | None = field(default=None, compare=False)
    """Hears of every pause of an outage (the CLI prints a status line)."""
    budget_from_env: bool = False
    """`deadline` came from `AMBER_RETRY_BUDGET`: a target's option does not replace it."""
    scrypt: ScryptParams = field(default_factory=ScryptParams)
    """scrypt cost for the password slot written when a repository is created."""
    password: str | None = field(default=None, repr=False, compare=False)
    """The password of a target that asks for one (`Target.asks_password`), given at the edge;
    None: such a target cannot be opened (a node has no one to ask)."""
    key_cache: Path | None = field(default_factory=lambda: key_cache_dir(os.environ))
    """Where unlocked keys of password targets are remembered (`amber.backup.keycache`);
    None: nowhere. Set by `AMBER_KEY_CACHE` (a directory, or `off`)."""

    def retrying(self, store: BlobStore, budget: float | None = None) -> RetryingStore:
        """`store` (unwrapped if it already retries) retried within this runtime's budgets, or
        `budget` seconds (a target's own) unless the environment set the budget."""
        inner = store.inner if isinstance(store, RetryingStore) else store
        deadline = self.deadline if budget is None or self.budget_from_env else budget
        first = self.first_contact_deadline
        return RetryingStore(
            inner,
            attempts=self.attempts,
            base_delay=self.base_delay,
            max_delay=self.max_delay,
            deadline=deadline,
            first_deadline=None if first is None else min(first, deadline),
            on_retry=self.on_retry,
        )

    @classmethod
    def for_commands(
        cls, environ: Mapping[str, str], on_retry: Callable[[RetryWait], None] | None = None
    ) -> TargetRuntime:
        """What a CLI command uses: outages are retried for `OUTAGE_BUDGET` seconds (or
        `AMBER_RETRY_BUDGET`, or the target's `retry-budget`), a target that never answered
        fails within `FIRST_CONTACT_BUDGET`, and `on_retry` hears of every pause."""
        value = environ.get(RETRY_BUDGET_ENV, "").strip()
        return cls(
            attempts=10_000,
            max_delay=8.0,
            deadline=parse_retry_budget(value, RETRY_BUDGET_ENV) if value else OUTAGE_BUDGET,
            first_contact_deadline=FIRST_CONTACT_BUDGET,
            on_retry=on_retry,
            budget_from_env=bool(value),
        )


def parse_retry_budget(value: str, where: str) -> float:
    """A retry budget: a duration (`90s`, `10m`, or seconds) of more than 0 and at most a day;
    InvalidArgument otherwise."""
    try:
        seconds = parse_duration(value)
    except InvalidArgument:
        seconds = -1.0
    if not 0 < seconds <= 86400:
        raise InvalidArgument(
            f"{where} must be a duration of more than 0 and at most a day (e.g. 90s, 10m, or a "
            f"number of seconds), not {value[:40]!r}"
        )
    return seconds


def _target_budget(target: Target) -> float | None:
    value = target.options.get(RETRY_BUDGET_OPTION)
    if value is None:
        return None
    return parse_retry_budget(value, f"option {RETRY_BUDGET_OPTION} of target {target.name!r}")


def key_cache_dir(environ: Mapping[str, str]) -> Path | None:
    """The key cache directory `AMBER_KEY_CACHE` asks for (default `/run/amber/keys`)."""
    value = environ.get(KEY_CACHE_ENV, "")
    if value.lower() in ("off", "no", "0", "false"):
        return None
    return Path(value) if value else DEFAULT_KEY_CACHE_DIR


def _key_cache(target: Target, runtime: TargetRuntime) -> KeyCache | None:
    """The cache for a password target (key files unlock without scrypt: nothing to save)."""
    if runtime.key_cache is None or target.password_file is None:
        return None
    try:
        return KeyCache(runtime.key_cache, Path(target.password_file))
    except OSError:
        return None  # the password file cannot be read either: `credentials` says so


def _read_secret(path: str | None, what: str) -> bytes | None:
    """A secret file's bytes; errors name the file, never its content."""
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise InvalidArgument(f"cannot read the {what} file {path}: {e.strerror}") from None


def credentials(target: Target, given: str | None = None) -> Credentials | None:
    """The password or key file that opens the target's repository (None if unencrypted);
    `given`: the password of a target that asks for one."""
    if target.asks_password:
        if not given:
            raise InvalidArgument(
                f"target {target.name!r} has no password file: give its password in "
                "AMBER_PASSWORD_FILE or AMBER_PASSWORD (or add the target with --password-file)"
            )
        return Password(given)
    password = _read_secret(target.password_file, "password")
    if password is not None:
        text = password.decode("utf-8", errors="strict").rstrip("\r\n")
        if not text:
            raise InvalidArgument(f"the password file {target.password_file} is empty")
        return Password(text)
    key = _read_secret(target.key_file, "key")
    return None if key is None else KeyFile(key)


def store_options(target: Target) -> dict[str, str]:
    """The store options with the secret key read from its file (options of the retry
    wrapper left out)."""
    options = {k: v for k, v in target.options.items() if k != RETRY_BUDGET_OPTION}
    secret = _read_secret(target.secret_key_file, "secret key")
    if secret is not None:
        options["secret-key"] = secret.decode("utf-8").strip()
    return options


def open_store(target: Target, runtime: TargetRuntime | None = None) -> BlobStore:
    """The target's blob store (`amber.blobstore.target.open_store` checks its URL and
    options), retried within the runtime's budget. No I/O happens yet."""
    runtime = runtime or TargetRuntime()
    return runtime.retrying(open_url(target.url, store_options(target)), _target_budget(target))


def open_target_repository(
    target: Target,
    *,
    create: bool = False,
    runtime: TargetRuntime | None = None,
    clock: Clock = time.time,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Repository:
    """Open the target's repository; with `create`, initialize it if there is none yet (with
    `chunk_size`; an existing repository keeps its own)."""
    runtime = runtime or TargetRuntime()
    return open_or_init_repository(
        open_store(target, runtime),
        credentials(target, runtime.password),
        create=create,
        encryption=target.encryption,
        scrypt=runtime.scrypt,
        clock=clock,
        key_cache=_key_cache(target, runtime),
        chunk_size=chunk_size,
    )


def open_or_init_repository(
    store: BlobStore,
    creds: Credentials | None,
    *,
    create: bool,
    encryption: str,
    scrypt: ScryptParams,
    clock: Clock,
    key_cache: KeyCache | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Repository:
    """Open the repository in `store`; with `create`, initialize it (with `chunk_size`) if the
    store has none.

    A store whose `config` exists but whose repository does not open (e.g. a missing key
    slot) is never initialized over.
    """
    try:
        return open_repository(store, creds, clock=clock, key_cache=key_cache)
    except NotFound:
        if not create or _has_config(store):
            raise
    return init_repository(
        store,
        creds,
        encryption=encryption,
        scrypt=scrypt,
        clock=clock,
        key_cache=key_cache,
        chunk_size=chunk_size,
    )


def _has_config(store: BlobStore) -> bool:
    try:
        read_config(store)
    except NotFound:
        return False
    return True


@dataclass(frozen=True)
class TargetStatus:
    """What `amber target status` reports."""

    name: str
    where: str
    reachable: bool
    writable: bool
    latency_ms: float | None
    error: str | None = None
    initialized: bool = False
    repository_version: int | None = None
    repository_id: str | None = None
    encryption: str | None = None
    unlocked: bool | None = None
    """Whether the configured credential opens the repository (None: not tried)."""
    size_bytes: int | None = None
    objects: int | None = None
    backups: int | None = None


def target_status(target: Target, runtime: TargetRuntime | None = None) -> TargetStatus:
    """Probe a target (reachable, writable, latency) and describe its repository."""
    store = open_store(target, runtime)
    found = _probe(store)
    status = TargetStatus(
        target.name,
        store.describe(),
        found.reachable,
        found.writable,
        found.latency_ms,
        found.error,
    )
    if not found.reachable:
        return status
    try:
        return _with_repository(status, target, store, (runtime or TargetRuntime()).password)
    except AmberError as e:
        return dataclasses.replace(status, error=status.error or e.message)


def _probe(store: BlobStore) -> ProbeResult:
    return probe(store)


def _with_repository(
    status: TargetStatus, target: Target, store: BlobStore, password: str | None
) -> TargetStatus:
    try:
        config, _ = read_config(store)
    except NotFound:
        return status
    size = objects = backups = 0
    for info in store.list(""):
        size += info.size
        objects += 1
        backups += info.key.startswith(BACKUPS_PREFIX)
    status = dataclasses.replace(
        status,
        initialized=True,
        repository_version=config.version,
        repository_id=config.repository_id,
        encryption=config.encryption,
        size_bytes=size,
        objects=objects,
        backups=backups,
    )
    try:
        open_repository(store, credentials(target, password))
    except (PermissionDenied, InvalidArgument) as e:
        return dataclasses.replace(status, unlocked=False, error=status.error or e.message)
    return dataclasses.replace(status, unlocked=True)


# -- handles -----------------------------------------------------------------------------------

HANDLE_PREFIX = "amber:v1:backup:"


def backup_handle(target: str, backup_id: str) -> str:
    """A self-describing name for a backup: `amber:v1:backup:<target>:<backup id>` (at most 112
    characters, within the 128 a CSI snapshot id may have)."""
    return f"{HANDLE_PREFIX}{target}:{backup_id}"


def parse_backup_ref(ref: str, target: str | None) -> tuple[str | None, str]:
    """`(target, backup id)` from a handle or a bare backup id (with `target` from --target).

    A handle that names a target other than `target` is InvalidArgument.
    """
    if not ref.startswith(HANDLE_PREFIX):
        return target, ref
    named, sep, backup_id = ref.removeprefix(HANDLE_PREFIX).partition(":")
    if not sep:
        raise InvalidArgument(f"invalid backup handle {ref!r}: expected {HANDLE_PREFIX}TARGET:ID")
    validate_target_name(named)
    if target is not None and target != named:
        raise InvalidArgument(f"backup handle {ref!r} names target {named!r}, not {target!r}")
    return named, backup_id
