"""Target URLs and options, credentials files, and the health probe."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from amber.blobstore.faulty import Fault, FaultyStore
from amber.blobstore.filestore import FileStore
from amber.blobstore.retry import RetryingStore
from amber.blobstore.s3store import S3Store
from amber.blobstore.target import open_store, probe, s3_config
from amber.domain.errors import InvalidArgument

if TYPE_CHECKING:
    from tests.blobstore.conftest import MotoServer

SECRET = "s3cr3t-test-value"


def test_file_url_opens_a_retrying_file_store(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}", {"timeout": "7.5"})
    assert isinstance(store, RetryingStore)
    assert isinstance(store.inner, FileStore)
    assert store.inner.root == tmp_path
    store.put("data/x", b"x")
    assert (tmp_path / "data" / "x").read_bytes() == b"x"


def test_file_url_may_name_localhost_and_escape_characters(tmp_path: Path) -> None:
    (tmp_path / "a b").mkdir()
    store = open_store(f"file://localhost{tmp_path}/a%20b", {})
    assert isinstance(store, RetryingStore)
    assert store.describe() == f"file://{tmp_path}/a b"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/plain/path",
        "ftp://host/x",
        "file://relative/path",
        "file:relative",
        "file:///x?y=1",
        "s3://",
        "s3://bucket:9000/x",
        "s3://a",
        "s3://bad_bucket!/x",
        "s3://bucket/a//b",
        "s3://bucket/x#frag",
        "s3://[::1/x",
    ],
)
def test_bad_urls_say_what_is_accepted(url: str) -> None:
    with pytest.raises(InvalidArgument, match="file:///absolute/path or s3://bucket") as caught:
        open_store(url, {})
    assert "\n" not in str(caught.value)


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(InvalidArgument, match="credentials do not belong") as caught:
        open_store(f"s3://AKID:{SECRET}@bucket/x", {})
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "options", "match"),
    [
        ("file:///tmp", {"endpoint": "http://x"}, "unknown option"),
        ("s3://bucket", {"secret_key": SECRET}, "unknown option"),
        ("s3://bucket", {"path-style": "maybe"}, "true or false"),
        ("s3://bucket", {"read-timeout": "soon"}, "positive number"),
        ("s3://bucket", {"connect-timeout": "-1"}, "positive number"),
        ("s3://bucket", {"access-key": "AKID"}, "both"),
        ("s3://bucket", {"verify-tls": "false", "ca-bundle": "/etc/ssl/x.pem"}, "contradict"),
        ("s3://bucket", {"ca-bundle": "/nonexistent/ca.pem"}, "not a readable file"),
        ("s3://bucket", {"profile": "other"}, "only applies"),
    ],
)
def test_bad_options_are_invalid(url: str, options: dict[str, str], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        open_store(url, options)


def test_s3_options_become_the_config(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    config = s3_config(
        "s3://amber-backups/cluster-a/vols/",
        {
            "endpoint": "https://minio.local:9000",
            "region": "eu-central-1",
            "ca-bundle": str(bundle),
            "access-key": "AKIDEXPLICIT",
            "secret-key": SECRET,
            "connect-timeout": "2",
            "read-timeout": "30.5",
        },
    )
    assert config.bucket == "amber-backups"
    assert config.prefix == "cluster-a/vols"
    assert config.endpoint_url == "https://minio.local:9000"
    assert config.region == "eu-central-1"
    assert config.path_style  # the default with an endpoint
    assert config.verify_tls == str(bundle)
    assert (config.access_key, config.secret_key) == ("AKIDEXPLICIT", SECRET)
    assert (config.connect_timeout, config.read_timeout) == (2.0, 30.5)


def test_s3_defaults_suit_aws() -> None:
    config = s3_config("s3://amber-backups", {})
    assert config.prefix == ""
    assert config.endpoint_url is None
    assert not config.path_style
    assert config.verify_tls is True
    assert config.access_key is None  # boto3's default chain
    off = s3_config("s3://amber-backups", {"verify-tls": "no", "path-style": "YES"})
    assert (off.verify_tls, off.path_style) == (False, True)


def test_plain_credentials_file(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.write_text(f"# written by the operator\naccess_key = AKIDFILE\nsecret_key={SECRET}\n")
    config = s3_config("s3://amber-backups", {"credentials-file": str(creds)})
    assert (config.access_key, config.secret_key, config.session_token) == (
        "AKIDFILE",
        SECRET,
        None,
    )


def test_aws_shared_credentials_file_with_profile(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.write_text(
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = other\n\n"
        f"[backup]\naws_access_key_id = AKIDBACKUP\naws_secret_access_key = {SECRET}\n"
        "aws_session_token = tok3n\n"
    )
    config = s3_config("s3://amber-backups", {"credentials-file": str(creds), "profile": "backup"})
    assert (config.access_key, config.secret_key, config.session_token) == (
        "AKIDBACKUP",
        SECRET,
        "tok3n",
    )
    with pytest.raises(InvalidArgument, match=r"no \[nightly\] section"):
        s3_config("s3://amber-backups", {"credentials-file": str(creds), "profile": "nightly"})


@pytest.mark.parametrize(
    "content",
    [
        "access_key = AKID\n",
        f"secret_key = {SECRET}\n",
        f"this line is not key=value {SECRET}\n[broken\n",
        f"access_key = AKID\naccess_key = AKID2\nsecret_key = {SECRET}\n",
    ],
)
def test_bad_credentials_files_never_quote_their_content(tmp_path: Path, content: str) -> None:
    creds = tmp_path / "creds"
    creds.write_text(content)
    with pytest.raises(InvalidArgument, match="credentials file") as caught:
        s3_config("s3://amber-backups", {"credentials-file": str(creds)})
    assert SECRET not in str(caught.value)


def test_credentials_file_and_keys_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="not both"):
        s3_config(
            "s3://amber-backups",
            {"credentials-file": str(tmp_path / "c"), "access-key": "A", "secret-key": "B"},
        )
    with pytest.raises(InvalidArgument, match="cannot read"):
        s3_config("s3://amber-backups", {"credentials-file": str(tmp_path / "missing")})


# -- probe ---------------------------------------------------------------------------------


def test_probe_of_a_healthy_file_target(file_store: FileStore) -> None:
    ticks = iter([10.0, 10.025])
    result = probe(file_store, clock=lambda: next(ticks))
    assert result.reachable
    assert result.writable
    assert result.latency_ms == pytest.approx(25.0)
    assert result.error is None
    assert list(file_store.list()) == []  # the probe object is gone


def test_probe_of_a_missing_file_target(tmp_path: Path) -> None:
    result = probe(FileStore(tmp_path / "unmounted", timeout=2.0))
    assert not result.reachable
    assert not result.writable
    assert result.latency_ms is None
    assert result.error is not None
    assert "unmounted" in result.error


def test_probe_of_a_target_that_refuses_writes(file_store: FileStore) -> None:
    faulty = FaultyStore(file_store, [Fault("put", key_prefix="probe/")])
    result = probe(faulty)
    assert result.reachable
    assert not result.writable
    assert result.error is not None
    assert "503" in result.error
    faulty.assert_all_fired()


def test_probe_detects_a_store_that_returns_other_bytes(file_store: FileStore) -> None:
    faulty = FaultyStore(file_store, [Fault("get", kind="corrupt_read")])
    result = probe(faulty)
    assert (result.reachable, result.writable) == (True, False)
    assert result.error is not None
    assert "different bytes" in result.error
    assert list(file_store.list()) == []  # deleted even though the check failed


def test_probe_of_s3_through_open_store(moto_server: MotoServer) -> None:
    options = {
        "endpoint": moto_server.endpoint,
        "access-key": moto_server.access_key,
        "secret-key": moto_server.secret_key,
    }
    store = open_store("s3://amber-test/probe-check", options)
    assert isinstance(store, RetryingStore)
    assert isinstance(store.inner, S3Store)
    result = probe(store)
    assert (result.reachable, result.writable, result.error) == (True, True, None)
    assert result.latency_ms is not None
    assert result.latency_ms >= 0
    assert list(store.list()) == []


def test_probe_with_wrong_credentials_reports_without_secrets(
    moto_auth_server: MotoServer,
) -> None:
    options = {
        "endpoint": moto_auth_server.endpoint,
        "access-key": moto_auth_server.access_key,
        "secret-key": SECRET,
    }
    result = probe(open_store("s3://amber-test", options))
    assert not result.reachable
    assert result.error is not None
    assert "SignatureDoesNotMatch" in result.error
    assert SECRET not in result.error
