"""The metrics address (checked at the edge) and the HTTP server, scraped over real HTTP."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from amber.domain.errors import InvalidArgument, Unavailable
from amber.metrics import Metrics, MetricsAddress, MetricsServer, parse_address
from tests.metrics.helpers import value


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:9809", "127.0.0.1", 9809),
        ("0.0.0.0:9809", "0.0.0.0", 9809),
        ("[::1]:9809", "::1", 9809),
        ("[::]:0", "::", 0),
        ("localhost:9809", "localhost", 9809),
        ("metrics.node-a.example:65535", "metrics.node-a.example", 65535),
    ],
)
def test_good_addresses(text: str, host: str, port: int) -> None:
    address = parse_address(text)
    assert address == MetricsAddress(host, port)
    assert parse_address(str(address)) == address


@pytest.mark.parametrize(
    "text",
    [
        "",
        "9809",
        ":9809",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:http",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:999999",
        "::1:9809",
        "[127.0.0.1]:9809",
        "[::1:9809",
        "http://127.0.0.1:9809",
        "bad host:9809",
        "under_score:9809",
    ],
)
def test_bad_addresses_are_one_clear_error(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_address(text)
    message = caught.value.message
    assert "metrics address" in message
    assert "\n" not in message


def test_serves_the_registry_over_http() -> None:
    metrics = Metrics()
    metrics.record_backup("success", 2.0, read=123)
    server = MetricsServer(MetricsAddress("127.0.0.1", 0), metrics.registry)
    server.start()
    try:
        assert server.port > 0
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as reply:
            assert reply.headers["Content-Type"].startswith("text/plain")
            body = reply.read()
    finally:
        server.stop()
    assert value(body, "amber_backup_read_bytes_total") == 123
    with pytest.raises(OSError), urllib.request.urlopen(url, timeout=5):
        pass


def test_a_taken_port_is_unavailable() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = MetricsServer(MetricsAddress("127.0.0.1", port), Metrics().registry)
        with pytest.raises(Unavailable, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            server.start()
