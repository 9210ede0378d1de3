"""S3Store behaviour beyond the shared contract: credentials, error mapping, timeouts, secrets.

Everything talks HTTP to 127.0.0.1 only: the moto and SeaweedFS servers from conftest, a closed
port, a socket that never answers, and a tiny HTTP server that answers every request with one error.
"""

from __future__ import annotations

import base64
import hashlib
import random
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest

from amber.blobstore.retry import RetryingStore
from amber.blobstore.s3store import S3Config, S3Store
from amber.domain.errors import (
    AmberError,
    InvalidArgument,
    NotFound,
    OutOfSpace,
    PermissionDenied,
    Unavailable,
)

if TYPE_CHECKING:
    from tests.blobstore.conftest import MotoServer, S3Server

ACCESS_KEY = "AKIDTEST"  # the plain moto server's key; unknown to the checking servers
SECRET_KEY = "s3cr3t-test-value"  # never to be shown anywhere


def every_call(store: S3Store) -> list[Callable[[], object]]:
    """One call of each kind, for checking how a store fails."""
    return [
        lambda: store.put("k", b"v"),
        lambda: store.get("k"),
        lambda: store.get_range("k", 0, 4),
        lambda: store.stat("k"),
        lambda: store.delete("k"),
        lambda: list(store.list("p")),
    ]


def errors_of(store: S3Store) -> list[AmberError]:
    caught = []
    for call in every_call(store):
        with pytest.raises(AmberError) as info:
            call()
        caught.append(info.value)
    return caught


# -- credentials ------------------------------------------------------------------------------


def test_unknown_access_key_is_permission_denied(signing_server: S3Server) -> None:
    store = S3Store(signing_server.config(access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    with pytest.raises(PermissionDenied, match="InvalidAccessKeyId"):
        store.get("k")
    with pytest.raises(PermissionDenied, match="InvalidAccessKeyId"):
        store.put("k", b"v")


def test_wrong_secret_is_permission_denied(signing_server: S3Server) -> None:
    store = S3Store(signing_server.config(secret_key=SECRET_KEY))
    with pytest.raises(PermissionDenied, match="SignatureDoesNotMatch") as caught:
        store.put("k", b"v")
    assert "check the access key, secret key" in str(caught.value)
    with pytest.raises(PermissionDenied):
        store.stat("k")  # a HEAD: the status code alone (403) says it
    assert not S3Store(signing_server.config()).exists("k")  # nothing was written


def test_right_credentials_work_on_the_checking_server(signing_server: S3Server) -> None:
    store = S3Store(signing_server.config())
    store.put("signed", b"ok")
    assert store.get("signed") == b"ok"


def test_default_credential_chain_reads_the_environment(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    store = S3Store(moto_server.config(access_key=None, secret_key=None))  # reads them now
    store.put("from-env", b"e")
    assert store.get("from-env") == b"e"


def test_no_credentials_at_all_is_permission_denied(s3_server: S3Server) -> None:
    store = S3Store(s3_server.config(access_key=None, secret_key=None))
    with pytest.raises(PermissionDenied, match="no usable S3 credentials"):
        store.get("k")


# -- missing bucket, unreachable and failing services ----------------------------------------


def test_missing_bucket_is_not_found_with_a_clear_message(moto_server: MotoServer) -> None:
    # moto only: SeaweedFS creates a missing bucket on the first write of an admin identity
    store = S3Store(moto_server.config(bucket="no-such-bucket"))
    for call in (lambda: store.get("k"), lambda: store.put("k", b"v"), lambda: list(store.list())):
        with pytest.raises(NotFound, match="bucket 'no-such-bucket' does not exist"):
            call()


def test_unreachable_endpoint_fails_fast_through_retries(closed_endpoint: str) -> None:
    config = S3Config(
        bucket="amber-test",
        endpoint_url=closed_endpoint,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        path_style=True,
        connect_timeout=0.5,
        read_timeout=0.5,
    )
    pauses: list[float] = []
    store = RetryingStore(S3Store(config), sleep=pauses.append, rng=random.Random(7))
    started = time.monotonic()
    with pytest.raises(
        Unavailable, match=r"cannot reach the service.*gave up after 5 attempts"
    ) as caught:
        store.get("config")
    assert time.monotonic() - started < 3.0
    assert len(pauses) == 4
    assert "Could not connect" in str(caught.value)


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An endpoint that accepts connections and never answers (a hung server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # the kernel completes connections; nobody ever reads them
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_a_silent_server_times_out_as_unavailable(silent_endpoint: str) -> None:
    config = S3Config(
        bucket="amber-test",
        endpoint_url=silent_endpoint,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        path_style=True,
        connect_timeout=0.3,
        read_timeout=0.3,
    )
    started = time.monotonic()
    with pytest.raises(Unavailable, match="ReadTimeout"):
        S3Store(config).get("config")
    # The configured 0.3 s, not botocore's default 60 s: a bound far from both, so that a
    # loaded machine cannot fail it (it failed at 2.0 s while six test suites shared 2 cores).
    assert time.monotonic() - started < 30.0


@dataclass
class ScriptedServer:
    """An HTTP server on 127.0.0.1 that answers every request with one S3 error."""

    status: int = 503
    code: str = "SlowDown"
    message: str = "Please reduce your request rate."
    requests: list[str] = field(default_factory=list)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers botocore's "Expect: 100-continue" at once

            def _answer(self) -> None:
                server.requests.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                body = (
                    f"<?xml version='1.0'?><Error><Code>{server.code}</Code>"
                    f"<Message>{server.message}</Message></Error>"
                ).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedServer, S3Store]]:
    script = ScriptedServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), script.handler())
    httpd.block_on_close = False
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    config = S3Config(
        bucket="amber-test",
        prefix="p",
        endpoint_url=f"http://127.0.0.1:{httpd.server_address[1]}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        path_style=True,
        connect_timeout=1.0,
        read_timeout=2.0,
    )
    yield script, S3Store(config)
    httpd.shutdown()
    httpd.server_close()


def test_botocore_does_not_retry_by_itself(scripted: tuple[ScriptedServer, S3Store]) -> None:
    script, store = scripted
    with pytest.raises(Unavailable, match="SlowDown"):
        store.get("k")
    assert script.requests == ["GET /amber-test/p/k"]  # one attempt; retrying is our job


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (503, "SlowDown", Unavailable),
        (500, "InternalError", Unavailable),
        (502, "BadGateway", Unavailable),
        (403, "AccessDenied", PermissionDenied),
        (400, "ExpiredToken", PermissionDenied),
        (404, "NoSuchKey", NotFound),
        (507, "XMinioStorageFull", OutOfSpace),
        (400, "AuthorizationHeaderMalformed", InvalidArgument),
    ],
)
def test_error_codes_map_to_domain_errors(
    scripted: tuple[ScriptedServer, S3Store], status: int, code: str, expected: type[AmberError]
) -> None:
    script, store = scripted
    script.status, script.code = status, code
    for error in errors_of(store)[:2]:  # put and get carry a body with the code
        assert type(error) is expected


def test_a_secret_echoed_by_the_server_is_redacted(
    scripted: tuple[ScriptedServer, S3Store],
) -> None:
    script, store = scripted
    script.status, script.code = 403, "AccessDenied"
    script.message = f"you sent secret {SECRET_KEY}"
    errors = errors_of(store)
    assert any("***" in str(e) for e in errors)
    assert all(SECRET_KEY not in str(e) for e in errors)


# -- secrets never shown ---------------------------------------------------------------------


def test_secrets_never_appear_in_descriptions_or_errors(signing_server: S3Server) -> None:
    config = signing_server.config(
        secret_key=SECRET_KEY,
        session_token="sessi0n-t0ken-value",
    )
    store = S3Store(config)
    shown = [repr(config), str(config), store.describe(), repr(store)]
    shown += [str(e) for e in errors_of(store)]
    shown += [str(e.__cause__) for e in errors_of(store)]
    for text in shown:
        assert SECRET_KEY not in text
        assert "sessi0n-t0ken-value" not in text

    assert "secret_key='***'" in repr(config)
    assert ACCESS_KEY not in repr(config)  # this config uses the server's real access key


def test_describe_names_bucket_prefix_and_endpoint(s3_server: S3Server) -> None:
    config = s3_server.config(prefix="cluster-a/backups")
    assert S3Store(config).describe() == (
        f"s3://amber-test/cluster-a/backups/ at {s3_server.endpoint}"
    )
    aws = S3Config(bucket="b-on-aws", region="eu-west-1")
    assert S3Store(aws).describe() == "s3://b-on-aws/ in AWS region eu-west-1"


def test_prefixes_isolate_stores_in_one_bucket(s3_server: S3Server) -> None:
    one, two = S3Store(s3_server.config()), S3Store(s3_server.config())
    one.put("config", b"1")
    assert not two.exists("config")
    assert [i.key for i in one.list()] == ["config"]


@pytest.mark.parametrize(
    "changes",
    [
        {"bucket": ""},
        {"prefix": "../up"},
        {"access_key": "AKID", "secret_key": None},
        {"access_key": None, "secret_key": "only-a-secret"},
        {"connect_timeout": 0},
        {"list_page_size": 1001},
        {"max_connections": 0},
        {"endpoint_url": "minio:9000"},
        {"endpoint_url": "ftp://minio:9000"},
        {"endpoint_url": "http://user:pa55word@minio:9000"},
    ],
)
def test_config_rejects_nonsense(changes: dict[str, object]) -> None:
    fields: dict[str, object] = {"bucket": "amber-test", **changes}
    with pytest.raises(InvalidArgument):
        S3Config(**fields)  # type: ignore[arg-type]


def test_a_malformed_region_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="cannot set up an S3 client"):
        S3Store(S3Config(bucket="amber-test", region="eu west!"))


def test_an_endpoint_with_a_password_is_refused_without_showing_it() -> None:
    with pytest.raises(InvalidArgument, match="credentials do not belong") as caught:
        S3Config(bucket="amber-test", endpoint_url="https://user:pa55word@minio:9000")
    assert "pa55word" not in str(caught.value)


# -- what an upload hashes ------------------------------------------------------------------


def test_uploads_carry_their_crc32_and_the_signed_sha256_but_no_md5(s3_server: S3Server) -> None:
    """Over http: the CRC32 of the body (which the service checks) and the SigV4-signed
    SHA-256 (against tampering; botocore drops it on https), and no Content-MD5 on top (a
    third, slower pass over every pack)."""
    store = S3Store(s3_server.config())
    sent: list[dict[str, str]] = []

    def capture(request: Any, **_: object) -> None:
        sent.append(
            {
                k.lower(): v.decode() if isinstance(v, bytes) else v
                for k, v in request.headers.items()
            }
        )

    store._client.meta.events.register("before-send.s3.PutObject", capture)
    rng = random.Random(5)
    parts = [rng.randbytes(70_000), b"", rng.randbytes(1_000)]
    store.stage("data/ab/pack", parts)
    store.put("config", b"small object")
    assert store.get("data/ab/pack") == b"".join(parts)
    assert store.get("config") == b"small object"
    assert len(sent) == 2
    for headers, body in zip(sent, (b"".join(parts), b"small object"), strict=True):
        assert "content-md5" not in headers
        assert headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
        crc = zlib.crc32(body).to_bytes(4, "big")
        assert headers["x-amz-checksum-crc32"] == base64.b64encode(crc).decode()


class _EmptyBody:
    """The raw body of a canned empty answer."""

    def stream(self) -> Iterator[bytes]:
        yield b""


@pytest.mark.parametrize(
    ("endpoint", "signed"),
    [("https://s3.example.test", False), ("http://s3.example.test", True), (None, False)],
)
def test_the_body_is_hashed_for_signing_only_without_tls(
    endpoint: str | None, signed: bool
) -> None:
    """The request botocore builds, stopped before it is sent (no server involved): over TLS
    the body goes unsigned with its CRC32; over plain http its SHA-256 is signed too."""
    from botocore.awsrequest import AWSResponse

    config = S3Config(
        bucket="b", endpoint_url=endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY
    )
    store = S3Store(config)
    seen: dict[str, str] = {}

    def stop(request: Any, **_: object) -> AWSResponse:
        seen.update(
            {
                k.lower(): v.decode() if isinstance(v, bytes) else v
                for k, v in request.headers.items()
            }
        )
        return AWSResponse(request.url, 200, {}, _EmptyBody())

    store._client.meta.events.register("before-send.s3.PutObject", stop)
    body = b"a pack" * 1000
    store.stage("data/ab/pack", [body[:10], body[10:]])
    sha = hashlib.sha256(body).hexdigest()
    assert seen["x-amz-content-sha256"] == (sha if signed else "UNSIGNED-PAYLOAD")
    crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    assert seen["x-amz-checksum-crc32"] == crc
