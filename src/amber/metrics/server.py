"""Serving `/metrics` over HTTP with prometheus_client's own small server.

`parse_address` checks a `HOST:PORT` at the edge (one clear error for a bad one);
`MetricsServer` serves a registry there on a daemon thread until stopped. The server answers
every path with the metrics (prometheus_client's WSGI app), in the OpenMetrics format when the
scraper asks for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from amber.domain.addresses import ListenAddress, parse_listen_address
from amber.domain.errors import Unavailable

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = ["MetricsAddress", "MetricsServer", "parse_address"]

MetricsAddress = ListenAddress
"""Where to serve the metrics (`amber.domain.addresses.ListenAddress`)."""


def parse_address(text: str) -> MetricsAddress:
    """`HOST:PORT` (`[v6]:PORT` for IPv6); InvalidArgument naming the value otherwise."""
    return parse_listen_address(text, "metrics", 9809)


class MetricsServer:
    """An HTTP server of one registry's metrics."""

    def __init__(self, address: MetricsAddress, registry: CollectorRegistry) -> None:
        self.address = address
        self._registry = registry
        self._server: Any = None

    @property
    def port(self) -> int:
        """The bound port (the one chosen when the address said 0)."""
        if self._server is None:
            return self.address.port
        return int(self._server.server_port)

    def start(self) -> None:
        """Bind and serve on a daemon thread; Unavailable when the address cannot be bound."""
        from prometheus_client import start_http_server

        try:
            self._server, _thread = start_http_server(
                self.address.port, addr=self.address.host, registry=self._registry
            )
        except OSError as e:
            raise Unavailable(
                f"cannot serve metrics on {self.address}: {e.strerror or e}"
            ) from None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
