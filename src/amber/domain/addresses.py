"""Listen addresses (`HOST:PORT`) of Amber's HTTP servers: the metrics endpoint and the
dashboard. One parser, so both edges accept and refuse the same things with the same words."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

from amber.domain.errors import InvalidArgument

__all__ = ["ListenAddress", "parse_listen_address"]

_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


@dataclass(frozen=True)
class ListenAddress:
    """Where a server listens."""

    host: str
    """An IP address or a host name (IPv6 without brackets)."""
    port: int
    """The TCP port (0: any free one; the server says which)."""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach it."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: it may resolve anywhere

    def url(self) -> str:
        """The address to open in a browser (a wildcard bind is opened on 127.0.0.1)."""
        if self.host in ("0.0.0.0", "::"):
            return f"http://127.0.0.1:{self.port}/"
        return f"http://{self}/"


def parse_listen_address(text: str, what: str, port_example: int) -> ListenAddress:
    """`HOST:PORT` (`[v6]:PORT` for IPv6; port 0: any free port); InvalidArgument naming the
    value and the rule otherwise. `what` names the address in errors (`metrics`, `dashboard`)."""
    shown = f"{what} address {text[:80]!r}"
    example = f"expected HOST:PORT, e.g. 127.0.0.1:{port_example} or [::1]:{port_example}"
    host, sep, port_text = text.strip().rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if not sep or not host or not port_text.isdigit() or len(port_text) > 5:
        raise InvalidArgument(f"{shown} is not valid: {example}")
    port = int(port_text)
    if port > 65535:
        raise InvalidArgument(f"{shown}: port {port} is out of range (port 0-65535; 0: any)")
    if not bracketed and ":" in host:
        raise InvalidArgument(f"{shown}: put an IPv6 host in [], like [::1]:{port_example}")
    if not _valid_host(host, bracketed=bracketed):
        raise InvalidArgument(f"{shown}: {host!r} is not a host; {example}")
    return ListenAddress(host, port)


def _valid_host(host: str, *, bracketed: bool) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return not bracketed and len(host) <= 253 and _HOSTNAME.fullmatch(host) is not None
    return bracketed == (ip.version == 6)
