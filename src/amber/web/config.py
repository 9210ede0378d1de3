"""How the dashboard runs: address, token, pool and targets (read once at the edge).

The rule that a non-loopback bind needs a token lives here, below both edges that start a
dashboard (`amber dashboard` and `amber node --dashboard-address`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from amber.domain.addresses import ListenAddress, parse_listen_address
from amber.domain.errors import InvalidArgument, NotFound, PermissionDenied

DEFAULT_ADDRESS = "127.0.0.1:8080"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
MIN_TOKEN_LENGTH = 16


Address = ListenAddress
"""Where the dashboard listens (`amber.domain.addresses.ListenAddress`)."""


def parse_address(text: str) -> Address:
    """`HOST:PORT` (`[::1]:8080` for IPv6; port 0: any free port); InvalidArgument with the
    rule otherwise."""
    return parse_listen_address(text, "dashboard", 8080)


def read_token(path: Path) -> str:
    """The token in a file (surrounding whitespace dropped); at least 16 characters."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError as e:
        raise NotFound(f"token file {path} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise PermissionDenied(f"cannot read the token file {path}: {e}") from e
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        raise InvalidArgument(
            f"the token in {path} must be at least {MIN_TOKEN_LENGTH} characters with no spaces "
            "(e.g. `openssl rand -hex 32`)"
        )
    return token


@dataclass(frozen=True)
class DashboardConfig:
    """Everything the dashboard needs, decided at the edge."""

    pool: Path
    """The pool directory it shows and acts on."""
    targets_config: Path
    """The targets file (the same as `amber target --config`)."""
    address: Address = field(default_factory=lambda: parse_address(DEFAULT_ADDRESS))
    """Where to listen."""
    token: str | None = field(default=None, repr=False)
    """Who may use it when set: `Authorization: Bearer TOKEN`, or the login page's cookie."""
    jobs_file: Path | None = None
    """The recurring jobs the jobs page shows and runs (`amber job --file`); None: the node's
    dashboard, whose jobs are RecurringJob resources."""
    poll_seconds: float = 1.0
    """How often pages ask for the running operations."""

    def check(self, token_flag: str = "--token-file") -> None:
        """Refuse a bind other machines can reach without a token (`token_flag` is the edge's
        name for the token option)."""
        if not self.address.loopback and self.token is None:
            raise InvalidArgument(
                f"the dashboard address {self.address.host}:{self.address.port} is reachable "
                f"from other machines: give {token_flag} (or bind 127.0.0.1 and use an SSH "
                "tunnel or kubectl port-forward)"
            )


def build_config(
    pool: Path,
    targets_config: Path,
    address: str,
    token_file: Path | None,
    token_flag: str = "--token-file",
    *,
    jobs_file: Path | None = None,
) -> DashboardConfig:
    """The checked configuration of a dashboard from what the edge was given."""
    config = DashboardConfig(
        pool=pool,
        targets_config=targets_config,
        address=parse_address(address),
        token=read_token(token_file) if token_file is not None else None,
        jobs_file=jobs_file,
    )
    config.check(token_flag)
    return config
