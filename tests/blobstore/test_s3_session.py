"""S3 clients share one botocore session's loaded models, and nothing else (no network).

Every CSI call that reads a target opens its store: a session of its own per store parsed S3's
service model again each time (~65-190 ms of CPU; ListSnapshots of a backup snapshot ID took
~150-250 ms on a loaded test machine, ~35-55 ms with the shared session).
"""

from __future__ import annotations

import pytest

from amber.blobstore.s3store import S3Config, S3Store


def config(key: str | None, endpoint: str = "http://127.0.0.1:9") -> S3Config:
    return S3Config(
        bucket="b",
        endpoint_url=endpoint,
        access_key=key,
        secret_key=None if key is None else f"{key}-secret",
    )


def test_stores_with_keys_share_the_loaded_model_not_their_credentials() -> None:
    one, two = S3Store(config("one")), S3Store(config("two", "http://127.0.0.1:8"))
    assert one._client._loader is two._client._loader
    assert one._client._request_signer._credentials.access_key == "one"
    assert two._client._request_signer._credentials.access_key == "two"
    assert two._client.meta.endpoint_url == "http://127.0.0.1:8"


def test_a_store_without_keys_reads_the_environment_when_it_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env-1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-1")
    first = S3Store(config(None))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env-2")
    second = S3Store(config(None))
    assert first._client._request_signer._credentials.access_key == "from-env-1"
    assert second._client._request_signer._credentials.access_key == "from-env-2"
