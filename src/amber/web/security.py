"""Who may read and act: the token, the login cookie, CSRF and Origin/Host checks.

- Without a token (only a loopback bind is allowed then) anyone on this machine may read; the
  Host header must name a loopback host, so that a web page cannot reach the dashboard
  through a rebound DNS name.
- With a token, every request but the login page and static files needs `Authorization:
  Bearer TOKEN` or the session cookie the login page sets (HttpOnly, SameSite=Strict; its
  value is derived from the token, never the token itself). Pages redirect to the login page,
  the API answers 401.
- Every POST by a browser (no bearer header) carries the CSRF token (double submit: an HttpOnly
  cookie and the same value in the form or the `X-CSRF-Token` header), and its `Origin` (or
  `Referer`) must be this server. A request with the bearer header is not forgeable by a page
  (browsers never add that header across sites) and needs neither.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from amber.web.config import LOOPBACK_NAMES

SESSION_COOKIE = "amber_session"
CSRF_COOKIE = "amber_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


def session_value(token: str) -> str:
    """The session cookie's value for a token (an HMAC of it: the token is never sent back)."""
    return hmac.new(token.encode(), b"amber-dashboard-session-v1", hashlib.sha256).hexdigest()


def new_csrf_token() -> str:
    """A fresh random CSRF token."""
    return secrets.token_urlsafe(32)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two present strings."""
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


class Guard:
    """The checks of one dashboard, given its token (None: loopback only, no login)."""

    def __init__(self, token: str | None) -> None:
        self._token = token
        self._session = session_value(token) if token else None

    @property
    def needs_login(self) -> bool:
        """Whether requests must prove they know the token."""
        return self._token is not None

    def check_login(self, given: str) -> bool:
        """Whether the login form's token is right."""
        return same(given.strip(), self._token)

    def session_cookie(self) -> str:
        """The session cookie value after a good login."""
        assert self._session is not None
        return self._session

    def bearer(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header carries the right bearer token."""
        if self._token is None or not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        return scheme.lower() == "bearer" and same(value.strip(), self._token)

    def authenticated(self, authorization: str | None, cookie: str | None) -> bool:
        """Whether the request may go on (always, without a token)."""
        if self._token is None:
            return True
        return self.bearer(authorization) or same(cookie, self._session)

    def host_allowed(self, host: str | None) -> bool:
        """Without a token the Host must be a loopback name (DNS rebinding)."""
        if self._token is not None:
            return True
        return host_name(host or "") in LOOPBACK_NAMES


def host_name(host: str) -> str:
    """The host part of a Host header value (`[::1]:8080` -> `::1`)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def origin_matches(
    origin: str | None, referer: str | None, host: str | None, scheme: str = "http"
) -> bool:
    """Whether a POST comes from a page of this server: its Origin (or, without one, its
    Referer) names the scheme and Host it was sent to. A request with neither is refused."""
    source = origin if origin and origin != "null" else referer
    if not source or not host:
        return False
    parts = urlsplit(source)
    return parts.scheme == scheme and parts.netloc.lower() == host.lower()
