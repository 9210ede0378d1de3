"""Backup targets: from a URL and options to a ready BlobStore, and a health probe.

The one place where a target URL and its options are parsed and checked: the targets file
(`amber.backup.targets`), Kubernetes secrets (`amber.ops.targets`) and `amber target add` all
open stores through `open_store`. The S3 client library is imported only for an S3 URL (it
costs about 30 MB and a fifth of a second, which a file target need not pay).

Accepted URLs:
- `file:///absolute/path` — a directory on local disk or an NFS mount (it must exist).
  Options: `timeout` (seconds per filesystem call, default 60).
- `s3://bucket[/prefix]` — a bucket of AWS or any S3-compatible service. Options:
  `endpoint` (URL; none means AWS), `region` (default us-east-1), `path-style` (default true
  when an endpoint is given, else false), `verify-tls` (default true), `ca-bundle` (path of a
  PEM file), `access-key` + `secret-key`, or `credentials-file` (+ `profile`),
  `connect-timeout` (default 5), `read-timeout` (default 60). Without credentials boto3's
  default chain applies (environment, shared files, instance roles).

A credentials file holds `key = value` lines, `#` comments allowed; keys are `access_key`,
`secret_key`, `session_token` or their AWS spellings (`aws_access_key_id`,
`aws_secret_access_key`, `aws_session_token`). A plain file with no `[section]` is used as
is; an AWS shared-credentials file (`[default]`, `[other]` …) is read at the section named by
the `profile` option (default `default`).

Booleans are `true/false`, `yes/no`, `on/off` or `1/0`. Unknown options are errors, so a
misspelt option never silently falls back to a default.
"""

from __future__ import annotations

import configparser
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, unquote, urlsplit

from amber.blobstore.base import BlobStore
from amber.blobstore.filestore import FileStore, check_key
from amber.blobstore.retry import RetryingStore
from amber.domain.errors import AmberError, Corrupt, InvalidArgument

if TYPE_CHECKING:
    from amber.blobstore.s3store import S3Config

ACCEPTED = "a target is file:///absolute/path or s3://bucket[/prefix]"
FILE_OPTIONS = frozenset({"timeout"})
S3_OPTIONS = frozenset(
    {
        "endpoint",
        "region",
        "path-style",
        "verify-tls",
        "ca-bundle",
        "access-key",
        "secret-key",
        "credentials-file",
        "profile",
        "connect-timeout",
        "read-timeout",
    }
)
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_CREDENTIAL_NAMES = {
    "access_key": ("access_key", "aws_access_key_id"),
    "secret_key": ("secret_key", "aws_secret_access_key"),
    "session_token": ("session_token", "aws_session_token"),
}


def open_store(url: str, options: Mapping[str, str]) -> BlobStore:
    """The store `url` names, configured by `options` and wrapped in a RetryingStore.

    No I/O happens here beyond reading a credentials file: an unreachable target shows up on
    first use (or with `probe`). Raises InvalidArgument for a bad URL or option.
    """
    parts = _split(url)
    if parts.scheme == "file":
        return RetryingStore(_file_store(parts, options))
    if parts.scheme == "s3":
        from amber.blobstore.s3store import S3Store  # the S3 client, only for S3 targets

        return RetryingStore(S3Store(s3_config(url, options)))
    raise InvalidArgument(f"unsupported target scheme {parts.scheme!r}; {ACCEPTED}")


def s3_config(url: str, options: Mapping[str, str]) -> S3Config:
    """Parse an `s3://bucket[/prefix]` URL and its options into an S3Config."""
    from amber.blobstore.s3store import S3Config

    parts = _split(url)
    if parts.scheme != "s3" or ":" in parts.netloc or parts.query or parts.fragment:
        raise InvalidArgument(f"invalid S3 target {url!r}; {ACCEPTED} (endpoints go in options)")
    bucket = parts.netloc
    if not _BUCKET_RE.match(bucket):
        raise InvalidArgument(f"invalid bucket name {bucket!r} in {url!r}; {ACCEPTED}")
    prefix = unquote(parts.path).strip("/")
    if prefix:
        try:
            check_key(prefix)
        except InvalidArgument as e:
            raise InvalidArgument(f"invalid prefix in S3 target {url!r}: {e}; {ACCEPTED}") from e
    _check_options(options, S3_OPTIONS, "s3")
    endpoint = options.get("endpoint") or None
    access_key, secret_key, token = _credentials(options)
    return S3Config(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint,
        region=options.get("region", "us-east-1"),
        access_key=access_key,
        secret_key=secret_key,
        session_token=token,
        path_style=_flag(options, "path-style", default=endpoint is not None),
        verify_tls=_verify(options),
        connect_timeout=_seconds(options, "connect-timeout", 5.0),
        read_timeout=_seconds(options, "read-timeout", 60.0),
    )


@dataclass(frozen=True)
class ProbeResult:
    """What `probe` found out about a target."""

    reachable: bool
    """A read request (a LIST) succeeded."""
    writable: bool
    """A small object could be written, read back unchanged and deleted."""
    latency_ms: float | None
    """Duration of the read request, None when it failed."""
    error: str | None
    """The first failure, as a one-line human message; None when all went well."""


def probe(store: BlobStore, *, clock: Callable[[], float] = time.monotonic) -> ProbeResult:
    """Check a target: list (reachability, latency), then put, get and delete `probe/<random>`.

    Never raises for a failing store; the failure is in `error`. The probe object is deleted
    even when reading it back fails.
    """
    key = f"probe/{secrets.token_hex(8)}"
    payload = f"amber probe {key}".encode()
    started = clock()
    try:
        next(iter(store.list(key)), None)
    except AmberError as e:
        return ProbeResult(reachable=False, writable=False, latency_ms=None, error=str(e))
    latency_ms = (clock() - started) * 1000.0
    try:
        _write_read_delete(store, key, payload)
    except AmberError as e:
        return ProbeResult(reachable=True, writable=False, latency_ms=latency_ms, error=str(e))
    return ProbeResult(reachable=True, writable=True, latency_ms=latency_ms, error=None)


# -- internals --------------------------------------------------------------------------------


def _write_read_delete(store: BlobStore, key: str, payload: bytes) -> None:
    store.put(key, payload)
    try:
        back = store.get(key)
    finally:
        store.delete(key)
    if back != payload:
        raise Corrupt(f"{store.describe()} returned different bytes for {key!r} than were written")


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError as e:
        raise InvalidArgument(f"cannot parse target URL {url!r}: {e}; {ACCEPTED}") from e
    if has_password or "@" in parts.netloc:
        # never echo the URL: it holds credentials
        raise InvalidArgument(f"credentials do not belong in the target URL; {ACCEPTED}")
    return parts


def _file_store(parts: SplitResult, options: Mapping[str, str]) -> FileStore:
    path = unquote(parts.path)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise InvalidArgument(f"invalid file target {parts.geturl()!r}; {ACCEPTED}")
    if not path.startswith("/") or "\0" in path:
        raise InvalidArgument(f"file target needs an absolute path, not {path!r}; {ACCEPTED}")
    _check_options(options, FILE_OPTIONS, "file")
    return FileStore(Path(path), timeout=_seconds(options, "timeout", 60.0))


def _check_options(options: Mapping[str, str], known: frozenset[str], scheme: str) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidArgument(
            f"unknown option(s) {', '.join(unknown)} for a {scheme} target; "
            f"accepted: {', '.join(sorted(known))}"
        )


def is_true(value: str | None) -> bool:
    """Whether a boolean option's text says true (`true`, `yes`, `on`, `1`, any case)."""
    return value is not None and value.strip().lower() in _TRUE


def _flag(options: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = options.get(name)
    if value is None:
        return default
    if is_true(value):
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise InvalidArgument(f"option {name} must be true or false, not {value!r}")


def _seconds(options: Mapping[str, str], name: str, default: float) -> float:
    value = options.get(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 1e6:
        raise InvalidArgument(f"option {name} must be a positive number of seconds, not {value!r}")
    return seconds


def _verify(options: Mapping[str, str]) -> bool | str:
    verify = _flag(options, "verify-tls", default=True)
    bundle = options.get("ca-bundle")
    if bundle is None:
        return verify
    if not verify:
        raise InvalidArgument("options ca-bundle and verify-tls=false contradict each other")
    if not Path(bundle).is_file():
        raise InvalidArgument(f"CA bundle {bundle!r} is not a readable file")
    return bundle


def _credentials(options: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    """(access key, secret key, session token) from the options; all None for boto3's chain."""
    path = options.get("credentials-file")
    access, secret = options.get("access-key"), options.get("secret-key")
    if path is not None and (access or secret):
        raise InvalidArgument("give either access-key/secret-key or credentials-file, not both")
    if path is not None:
        return _read_credentials(Path(path), options.get("profile", "default"))
    if "profile" in options:
        raise InvalidArgument("option profile only applies with credentials-file")
    if bool(access) != bool(secret):
        raise InvalidArgument("give both access-key and secret-key, or neither")
    return access or None, secret or None, None


def _read_credentials(path: Path, profile: str) -> tuple[str, str, str | None]:
    """Read a credentials file (format in the module docstring). Messages never quote the
    file's contents: a parse error could otherwise print a secret."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"cannot read credentials file {path}: {type(e).__name__}") from None
    if not re.search(r"^\s*\[", text, re.MULTILINE):
        text = f"[{profile}]\n{text}"
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error:
        raise InvalidArgument(
            f"credentials file {path} is not 'key = value' lines or an AWS credentials file"
        ) from None
    if not parser.has_section(profile):
        raise InvalidArgument(f"credentials file {path} has no [{profile}] section")
    found = {
        field: next((parser[profile][n] for n in names if parser.has_option(profile, n)), None)
        for field, names in _CREDENTIAL_NAMES.items()
    }
    access, secret = found["access_key"], found["secret_key"]
    if not access or not secret:
        raise InvalidArgument(f"credentials file {path} needs both an access key and a secret key")
    return access, secret, found["session_token"] or None
