"""Domain errors as HTTP status codes: one table, used by every page, API call and action."""

from __future__ import annotations

from amber.domain import errors

_STATUS: tuple[tuple[type[errors.AmberError], int], ...] = (
    (errors.InvalidArgument, 400),
    (errors.NotFound, 404),
    (errors.AlreadyExists, 409),
    (errors.FailedPrecondition, 409),
    (errors.Busy, 409),
    (errors.OutOfSpace, 507),
    (errors.OutOfRange, 400),
    (errors.PermissionDenied, 403),
    (errors.Unavailable, 503),
)


def http_status(error: errors.AmberError) -> int:
    """The HTTP status of a domain error (500 for the rest)."""
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500
