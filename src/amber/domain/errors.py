"""The error hierarchy.

Each class carries a human message that names the object and says what to do, and the exit code
the CLI uses for it. The CSI edge maps these classes to gRPC status codes in one place
(`amber.csi.errors`); the CLI prints `error: <message>` and exits with `exit_code`.
"""

from __future__ import annotations


class AmberError(Exception):
    """Base of every error Amber raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(AmberError):
    """The request itself is wrong (bad size, bad name, conflicting options)."""

    exit_code = 2


class NotFound(AmberError):
    """The named object does not exist."""

    exit_code = 3


class AlreadyExists(AmberError):
    """An object with that name exists and is not compatible with the request."""

    exit_code = 4


class FailedPrecondition(AmberError):
    """The object is in a state that does not allow the operation (e.g. shrinking, in use)."""

    exit_code = 5


class OutOfSpace(AmberError):
    """The pool or target does not have room for the request."""

    exit_code = 6


class OutOfRange(AmberError):
    """A size is outside what the pool or the filesystem supports."""

    exit_code = 7


class SizeTooLarge(OutOfRange):
    """A size above the largest volume Amber makes (`units.MAX_SIZE`, 1 PiB).

    One rule, two edges: CSI answers OUT_OF_RANGE (a capacity the driver cannot satisfy, as
    the spec asks), the CLI treats it as a bad argument (exit 2) like any other unusable size.
    """

    exit_code = 2


class Busy(AmberError):
    """Another operation holds the object; retry later."""

    exit_code = 8


class Unavailable(AmberError):
    """A dependency (pool mount, kernel facility, remote target) cannot be reached now."""

    exit_code = 9


class Corrupt(AmberError):
    """Stored data failed a consistency or integrity check."""

    exit_code = 10


class PermissionDenied(AmberError):
    """Credentials or keys are wrong (e.g. a wrong repository password)."""

    exit_code = 11


class SystemFailure(AmberError):
    """A kernel call or system tool failed in a way the caller cannot fix."""

    exit_code = 12
