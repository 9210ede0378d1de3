"""Serving `/metrics` over HTTP with prometheus_client's own small server.

`parse_address` checks a `HOST:PORT` at the edge (one clear error for a bad one);
`MetricsServer` serves a registry there on a daemon thread until stopped. The server answers
every path with the metrics (prometheus_client's WSGI app), in the OpenMetrics format when the
scraper asks for it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from amber.domain.errors import InvalidArgument, Unavailable

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = ["MetricsAddress", "MetricsServer", "parse_address"]

_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_EXAMPLE: Final = "use HOST:PORT, like 127.0.0.1:9809, 0.0.0.0:9809 or [::1]:9809"


@dataclass(frozen=True)
class MetricsAddress:
    """Where to serve the metrics."""

    host: str
    """An IP address or a host name (IPv6 without brackets)."""
    port: int
    """The TCP port (0: any free one; the log says which)."""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str) -> MetricsAddress:
    """`HOST:PORT` (`[v6]:PORT` for IPv6); InvalidArgument naming the value otherwise."""
    host, sep, port_text = text.strip().rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if not sep or not host or not port_text.isdigit() or len(port_text) > 5:
        raise InvalidArgument(f"metrics address {text!r} is not valid: {_EXAMPLE}")
    port = int(port_text)
    if port > 65535:
        raise InvalidArgument(f"metrics address {text!r}: port {port} is out of range (0-65535)")
    if not _valid_host(host, bracketed=bracketed):
        raise InvalidArgument(f"metrics address {text!r}: {host!r} is not a host; {_EXAMPLE}")
    return MetricsAddress(host, port)


def _valid_host(host: str, *, bracketed: bool) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return not bracketed and len(host) <= 253 and _HOSTNAME.fullmatch(host) is not None
    return bracketed == (ip.version == 6)


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
