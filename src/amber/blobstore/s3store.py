"""A blob store in an S3 bucket (AWS, MinIO, Ceph RGW or any S3-compatible service).

Keys live under an optional prefix in one bucket (`s3://bucket/cluster-a` stores `config` as
`cluster-a/config`). S3 makes each PUT atomic, so a reader never sees half an object.

A body damaged on the way is refused by the service: every upload carries the CRC32 of its body
(`x-amz-checksum-crc32`, computed here with zlib at ~1.5 GB/s), which the service checks before
it stores anything (AWS documents `BadDigest` for a mismatch and SeaweedFS answers it; it is
retried as Unavailable). The SigV4 payload hash (`x-amz-content-sha256`) alone is not enough:
SeaweedFS stores a body that does not match it (tests/blobstore/test_s3_transfers.py sends
one; moto checks neither). Over https the body is not hashed again to sign it
(`payload_signing_enabled` off: TLS covers tampering, the CRC damage), so an upload costs one
cheap pass; botocore would not skip the SHA-256 by itself for a checksum header it did not
compute. Over plain http the signed SHA-256 stays, the only guard there against a body changed
on purpose. No Content-MD5: a third pass, and the slowest (~220 MB/s against SHA-256's ~400).

botocore's own retries are off (one attempt per call): retrying is the job of
`amber.blobstore.retry.RetryingStore`, which sees every attempt and owns the backoff. Flexible
checksums are not computed by botocore (`when_required`): on https it would send them as a
trailer of an `aws-chunked` body, which several S3-compatible services reject; the CRC32 above
is an ordinary header, set by this module.

Credentials are never shown: `S3Config.__repr__` and `describe()` leave them out, and every
error message passes through a redaction step before it is raised.
"""

from __future__ import annotations

import base64
import bisect
import io
import itertools
import re
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    SSLError,
)
from botocore.loaders import Loader

from amber.blobstore.base import BlobInfo, Payload
from amber.blobstore.filestore import check_key, check_prefix
from amber.domain.errors import (
    AmberError,
    InvalidArgument,
    NotFound,
    OutOfSpace,
    PermissionDenied,
    Unavailable,
)

_CODE_CLASSES: dict[str, type[AmberError]] = {
    code: cls
    for codes, cls in (
        (("NoSuchKey", "NotFound", "404"), NotFound),
        (
            (
                "AccessDenied",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "ExpiredToken",
                "InvalidToken",
                "TokenRefreshRequired",
                "RequestTimeTooSkewed",
                "AllAccessDisabled",
                "AccountProblem",
            ),
            PermissionDenied,
        ),
        (("XMinioStorageFull", "QuotaExceeded", "XAmzQuotaExceeded"), OutOfSpace),
        (
            (
                "BadDigest",  # the body's checksum did not match: damaged on the way
                "XAmzContentSHA256Mismatch",
                "IncompleteBody",
                "SlowDown",
                "Throttling",
                "ThrottlingException",
                "RequestTimeout",
                "ServiceUnavailable",
                "InternalError",
                "XMinioServerNotInitialized",
            ),
            Unavailable,
        ),
    )
    for code in codes
}
_STATUS_CLASSES: dict[int, type[AmberError]] = {404: NotFound, 403: PermissionDenied}
_HINTS: dict[type[AmberError], str] = {
    PermissionDenied: "check the access key, secret key, bucket policy and clock",
    OutOfSpace: "the service is full or over quota",
    Unavailable: "the service is busy or failing; try again later",
    InvalidArgument: "check the bucket, region and endpoint",
}


def _classify(code: str, status: int) -> type[AmberError]:
    """The domain error for an S3 error code, else for its HTTP status."""
    if code in _CODE_CLASSES:
        return _CODE_CLASSES[code]
    if status in _STATUS_CLASSES:
        return _STATUS_CLASSES[status]
    return Unavailable if status >= 500 else InvalidArgument


def _check_endpoint(url: str) -> None:
    if "@" in urlsplit(url).netloc:  # S3 never uses it; refuse rather than risk showing it
        raise InvalidArgument("credentials do not belong in the S3 endpoint URL")
    if not re.match(r"^https?://[^/?#]+", url):
        raise InvalidArgument(f"S3 endpoint {url!r} must be an http:// or https:// URL with a host")


@dataclass(frozen=True)
class S3Config:
    """Where and how to reach one bucket; built once, at the edge (`amber.blobstore.target`)."""

    bucket: str
    """The bucket name; it must exist (Amber never creates buckets)."""
    prefix: str = ""
    """Keys are stored under `prefix/`; empty for the bucket root."""
    endpoint_url: str | None = None
    """`https://minio.example:9000` for S3-compatible services; None for AWS."""
    region: str = "us-east-1"
    """The signing region; most S3-compatible services accept `us-east-1`."""
    access_key: str | None = None
    """Explicit credentials; None uses the AWS SDK's default chain (environment, shared files…)."""
    secret_key: str | None = None
    """Never shown by `repr`, `describe()` or error messages."""
    session_token: str | None = None
    """For temporary (STS) credentials; never shown either."""
    path_style: bool = False
    """`http://host/bucket/key` instead of `http://bucket.host/key` (MinIO, Ceph, moto)."""
    verify_tls: bool | str = True
    """Verify the server certificate: True, False, or the path of a CA bundle."""
    connect_timeout: float = 5.0
    """Seconds to wait for a TCP/TLS connection."""
    read_timeout: float = 60.0
    """Seconds to wait for the next bytes of an answer."""
    list_page_size: int = 1000
    """Keys per LIST request (1 to 1000); smaller pages only help tests."""
    max_connections: int = 16
    """HTTP connections kept open for concurrent uploads and downloads."""

    def __post_init__(self) -> None:
        if not self.bucket:
            raise InvalidArgument("an S3 target needs a bucket name")
        if self.prefix:
            check_key(self.prefix)
        if (self.access_key is None) != (self.secret_key is None):
            raise InvalidArgument("give both an S3 access key and a secret key, or neither")
        if self.endpoint_url is not None:
            _check_endpoint(self.endpoint_url)
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise InvalidArgument("S3 timeouts must be positive numbers of seconds")
        if not 1 <= self.list_page_size <= 1000:
            raise InvalidArgument("the S3 list page size must be between 1 and 1000")
        if self.max_connections < 1:
            raise InvalidArgument("S3 max_connections must be at least 1")

    def __repr__(self) -> str:
        shown = {
            "bucket": self.bucket,
            "prefix": self.prefix,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "access_key": self.access_key,
            "secret_key": None if self.secret_key is None else "***",
            "session_token": None if self.session_token is None else "***",
            "path_style": self.path_style,
            "verify_tls": self.verify_tls,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
        }
        return "S3Config(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


class _PartsBody(io.RawIOBase):
    """The concatenation of `parts` as a readable, seekable file, without joining them: botocore
    reads a body to sign it, again to send it, and seeks back for a retry. (Joining a 16 MiB
    pack per upload, in each of the workers that upload, put the S3 backup's peak RSS ~50 MB
    above the file target's.)"""

    def __init__(self, parts: Sequence[Payload]) -> None:
        super().__init__()
        self._parts = [memoryview(part) for part in parts if len(part)]
        self._starts = [0, *itertools.accumulate(len(part) for part in self._parts)]
        self._size = self._starts[-1]
        self._pos = 0

    def __len__(self) -> int:
        return self._size

    @property
    def parts(self) -> tuple[memoryview, ...]:
        """The non-empty parts, in order."""
        return tuple(self._parts)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        done = 0
        while done < len(out) and self._pos < self._size:
            index = bisect.bisect_right(self._starts, self._pos) - 1
            part = self._parts[index][self._pos - self._starts[index] :]
            count = min(len(part), len(out) - done)
            out[done : done + count] = part[:count]
            done += count
            self._pos += count
        return done


def _is_tls(endpoint_url: str | None) -> bool:
    """Whether requests go over TLS (AWS, without an endpoint, always does)."""
    return endpoint_url is None or endpoint_url.lower().startswith("https://")


def _crc32(body: Payload | _PartsBody) -> str:
    """The body's CRC32 as S3 headers carry it: base64 of the 4 big-endian bytes."""
    pieces = body.parts if isinstance(body, _PartsBody) else (body,)
    crc = 0
    for piece in pieces:
        crc = zlib.crc32(piece, crc)
    return base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")


class _S3Loader(Loader):  # type: ignore[misc]  # botocore is untyped
    """botocore's data loader, told that S3 is the only service there is.

    To check a service name, the stock loader lists every service directory it ships (~400)
    and looks for each kind of model file in each: ~0.2 s of a cold command's start on a cold
    page cache, for every client. This client only ever loads S3's models."""

    def list_available_services(self, type_name: str) -> list[str]:
        return ["s3"]


_SESSION_LOCK = threading.Lock()
_SESSION: list[Any] = []


def _shared_session() -> Any:
    """One botocore session per process, with S3's models loaded once (call with the lock).

    A new session parses S3's service model again for its first client: ~65-190 ms of CPU per
    S3Store, which a node paid on every CSI call that reads a target (ListSnapshots of a
    backup snapshot ID: three small GETs, and a new client). A client made from a warm session
    costs ~5 ms. Only clients given their keys use it, so nothing but the loaded models is
    shared; sessions are not thread-safe, hence the lock around its use.
    """
    if not _SESSION:
        _SESSION.append(_new_session())
    return _SESSION[0]


def _new_session() -> Any:
    """A botocore session that loads only S3's models (`_S3Loader`)."""
    session = botocore.session.Session()
    session.register_component("data_loader", _S3Loader())
    return session


class S3Store:
    """A `BlobStore` in one S3 bucket, under `config.prefix`.

    The client is created at once but connects lazily: constructing an S3Store does no I/O.
    botocore clients are thread-safe, so one S3Store serves many upload threads.
    """

    def __init__(self, config: S3Config) -> None:
        self._config = config
        self._prefix = f"{config.prefix.strip('/')}/" if config.prefix else ""
        try:
            self._client: Any = self._make_client(config)
        except (ValueError, BotoCoreError) as e:
            raise InvalidArgument(
                f"cannot set up an S3 client for {self.describe()}: {self._redact(str(e))}"
            ) from e

    @property
    def config(self) -> S3Config:
        """The configuration this store was built from."""
        return self._config

    def __repr__(self) -> str:
        return f"S3Store({self.describe()!r})"

    def describe(self) -> str:
        """`s3://bucket/prefix at <endpoint>` (or `in AWS region …`), without credentials."""
        where = f"s3://{self._config.bucket}/{self._prefix}"
        if self._config.endpoint_url:
            return f"{where} at {self._config.endpoint_url}"
        return f"{where} in AWS region {self._config.region}"

    def put(self, key: str, data: Payload) -> None:
        """Upload the object in one PUT (atomic on S3), its body signed (see the module)."""
        self._put_object(key, data)

    def stage(self, key: str, parts: Sequence[Payload]) -> None:
        """A PUT is durable when S3 answers: staging is putting, with the parts read in turn
        as one body (not joined)."""
        self._put_object(key, _PartsBody(parts))

    def _put_object(self, key: str, body: Payload | _PartsBody) -> None:
        with self._errors("writing", key):
            self._client.put_object(
                Bucket=self._config.bucket,
                Key=self._key(key),
                Body=body,
                ChecksumCRC32=_crc32(body),
            )

    def flush(self) -> None:
        """Nothing is ever staged on S3."""

    def get(self, key: str) -> bytes:
        """Download the whole object; a body cut short raises Unavailable."""
        with self._errors("reading", key):
            reply = self._client.get_object(Bucket=self._config.bucket, Key=self._key(key))
            return bytes(reply["Body"].read())

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """A ranged GET; a range past the end yields the bytes that exist (maybe none)."""
        if offset < 0 or length < 0:
            raise InvalidArgument(f"invalid range {offset}+{length} of {key!r}")
        if length == 0:
            self.stat(key)  # still NotFound for a missing key
            return b""
        with self._errors("reading", key):
            try:
                reply = self._client.get_object(
                    Bucket=self._config.bucket,
                    Key=self._key(key),
                    Range=f"bytes={offset}-{offset + length - 1}",
                )
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""  # the object exists but ends before `offset`
                raise
            data = bytes(reply["Body"].read())
        if "ContentRange" not in reply:  # a server that ignored the Range header
            data = data[offset : offset + length]
        return data

    def stat(self, key: str) -> BlobInfo:
        """Size and last-modified time from a HEAD request."""
        with self._errors("examining", key):
            reply = self._client.head_object(Bucket=self._config.bucket, Key=self._key(key))
        return BlobInfo(
            key=key, size=int(reply["ContentLength"]), mtime=reply["LastModified"].timestamp()
        )

    def exists(self, key: str) -> bool:
        """Whether a HEAD request finds the object. A missing bucket also answers False (S3
        does not say which is missing on HEAD); `list` and `put` report it clearly."""
        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        """Delete the object; S3 answers success for a missing key too."""
        with self._errors("deleting", key):
            self._client.delete_object(Bucket=self._config.bucket, Key=self._key(key))

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """ListObjectsV2 page by page (`list_page_size` keys each). The prefix is checked now;
        requests are made as the result is consumed. Keys that break the key rules (such as
        `dir/` markers made by consoles) are skipped, since no other method could name them."""
        check_prefix(prefix)
        return self._pages(prefix)

    def ensure_bucket(self) -> bool:
        """Create the bucket if it does not exist (`amber target add --create-bucket`); True
        when this call created it. A bucket someone else owns is an error."""
        bucket = self._config.bucket
        with self._errors("creating bucket", bucket):
            try:
                self._client.head_bucket(Bucket=bucket)
            except ClientError as e:
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status != 404:
                    raise
            else:
                return False
            extra: dict[str, Any] = {}
            if self._config.region and self._config.region != "us-east-1":
                extra["CreateBucketConfiguration"] = {"LocationConstraint": self._config.region}
            try:
                self._client.create_bucket(Bucket=bucket, **extra)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise
                return False
        return True

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _make_client(config: S3Config) -> Any:
        client_config = Config(
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3={
                "addressing_style": "path" if config.path_style else "auto",
                # https: TLS covers tampering and the CRC32 header damage, so the body is not
                # hashed again to sign it; plain http: its signed SHA-256 is the only guard
                # against a body changed on purpose (see the module)
                "payload_signing_enabled": not _is_tls(config.endpoint_url),
            },
            signature_version="s3v4",
            max_pool_connections=config.max_connections,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        arguments = {
            "region_name": config.region,
            "endpoint_url": config.endpoint_url,
            "verify": config.verify_tls,
            "aws_access_key_id": config.access_key,
            "aws_secret_access_key": config.secret_key,
            "aws_session_token": config.session_token,
            "config": client_config,
        }
        if config.access_key is None:
            # Credentials from the environment (or an instance role) are read by the session
            # once and kept: a session of its own reads them now, as before.
            return _new_session().create_client("s3", **arguments)
        with _SESSION_LOCK:
            return _shared_session().create_client("s3", **arguments)

    def _key(self, key: str) -> str:
        return self._prefix + check_key(key)

    def _pages(self, prefix: str) -> Iterator[BlobInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self._config.bucket,
            Prefix=self._prefix + prefix,
            PaginationConfig={"PageSize": self._config.list_page_size},
        )
        with self._errors("listing", prefix):
            for page in pages:
                for item in page.get("Contents", ()):
                    info = self._info(item)
                    if info is not None:
                        yield info

    def _info(self, item: dict[str, Any]) -> BlobInfo | None:
        key = str(item["Key"])[len(self._prefix) :]
        try:
            check_key(key)
        except InvalidArgument:
            return None
        return BlobInfo(key=key, size=int(item["Size"]), mtime=item["LastModified"].timestamp())

    @contextmanager
    def _errors(self, doing: str, key: str) -> Iterator[None]:
        """Translate botocore's exceptions into domain errors (with secrets redacted)."""
        try:
            yield
        except ClientError as e:
            raise self._client_error(e, doing, key) from e
        except (BotoCoreError, OSError) as e:
            raise self._transport_error(e, doing, key) from e

    def _client_error(self, e: Any, doing: str, key: str) -> AmberError:
        error = e.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "NoSuchBucket":
            return NotFound(
                f"bucket {self._config.bucket!r} does not exist ({self.describe()}); create it "
                "or fix the target URL"
            )
        cls = _classify(code, status)
        if cls is NotFound:
            return NotFound(f"blob {key!r} not found in {self.describe()}")
        said = self._redact(f"{code}: {error.get('Message', '')}".strip(": "))
        return cls(
            f"{doing} {key!r} in {self.describe()} failed ({said}, HTTP {status}); {_HINTS[cls]}"
        )

    def _transport_error(self, e: Exception, doing: str, key: str) -> AmberError:
        what = f"{doing} {key!r} in {self.describe()}"
        detail = self._redact(f"{type(e).__name__}: {e}")
        if isinstance(e, NoCredentialsError | PartialCredentialsError):
            return PermissionDenied(
                f"{what}: no usable S3 credentials ({detail}); give an access key and secret "
                "key or a credentials file"
            )
        if isinstance(e, ParamValidationError):
            return InvalidArgument(f"{what}: invalid request ({detail})")
        if isinstance(e, SSLError):
            return Unavailable(f"{what}: TLS failed ({detail}); check verify-tls and ca-bundle")
        return Unavailable(f"{what}: cannot reach the service ({detail})")

    def _redact(self, text: str) -> str:
        for secret in (self._config.secret_key, self._config.session_token):
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text
