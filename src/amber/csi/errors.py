"""Domain errors -> gRPC status codes: the one place where that mapping lives.

Servicer methods never touch `context.set_code()` or `context.abort()`. They validate the
request, call the domain and build the reply, and they raise `amber.domain.errors` classes when
something is wrong. The `rpc_errors` decorator catches what they raise and aborts the call with
the code the CSI spec expects:

    class ControllerServicer(csi_pb2_grpc.ControllerServicer):
        @rpc_errors()
        def CreateVolume(self, request, context):
            ...  # raise InvalidArgument(...), NotFound(...), ...

        # Example: a starting_token Amber did not issue is the spec's ABORTED row for this RPC
        # ("invalid starting_token"), not the INVALID_ARGUMENT of the default table.
        @rpc_errors({BadToken: grpc.StatusCode.ABORTED})
        def ListVolumes(self, request, context):
            ...

The per-RPC table wins over the defaults at every level of the class hierarchy, so
`{AmberError: FAILED_PRECONDITION}` turns every domain error of that RPC into
FAILED_PRECONDITION (what `Probe` needs), whatever the subclass.

Choices worth knowing:

- `Busy` -> ABORTED: the spec's code for "operation pending for volume"; the CO retries.
- `Corrupt` -> DATA_LOSS: the spec lets an RPC return any canonical code where its own table
  names none ("COs must handle all valid error codes"), and gRPC defines DATA_LOSS as
  "unrecoverable data loss or corruption" -- exactly what a failed integrity check is. INTERNAL
  would hide it among bugs, and the retryable codes (UNAVAILABLE, ABORTED) would invite the CO
  to loop on data that will not heal. An RPC whose spec table names a code for the situation
  overrides it.
- `SystemFailure` and every exception that is not an `AmberError` -> INTERNAL with a generic
  message and a reference; the traceback goes to the log under that reference. Whatever maps to
  INTERNAL gets the generic message, so kernel/tool output never reaches the CO's events.
- Secret values of the request (fields marked `csi_secret`, `secrets` maps, sensitive-looking
  map entries) are scrubbed from every message sent back and from the logged traceback, in case
  a lower layer quoted one.
- `context.abort()` called by a method itself is left alone (its code is already set).
"""

from __future__ import annotations

import functools
import inspect
import logging
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, TypeVar, cast

import grpc

from amber.csi.logging import secret_values
from amber.domain.errors import (
    AlreadyExists,
    AmberError,
    Busy,
    Corrupt,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    OutOfSpace,
    PermissionDenied,
    SystemFailure,
    Unavailable,
)
from amber.logs import scrub

__all__ = ["DEFAULT_CODES", "CodeTable", "rpc_errors", "status_for"]

_log = logging.getLogger(__name__)

CodeTable = Mapping[type[BaseException], grpc.StatusCode]
"""Exception class -> status code. Keys match subclasses too (the nearest class wins)."""

DEFAULT_CODES: Final[CodeTable] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    OutOfSpace: grpc.StatusCode.RESOURCE_EXHAUSTED,
    OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    Busy: grpc.StatusCode.ABORTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Corrupt: grpc.StatusCode.DATA_LOSS,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    SystemFailure: grpc.StatusCode.INTERNAL,
}
"""The mapping used when an RPC names no override for the error's class."""

_EMPTY: Final[CodeTable] = {}

_F = TypeVar("_F", bound=Callable[..., Any])


def _lookup(exc: BaseException, table: CodeTable) -> grpc.StatusCode | None:
    for cls in type(exc).__mro__:
        code = table.get(cls)
        if code is not None:
            return code
    return None


def status_for(
    exc: BaseException,
    method: str = "RPC",
    overrides: CodeTable = _EMPTY,
    secrets: Iterable[str] = (),
) -> tuple[grpc.StatusCode, str]:
    """The status code and message to send for `exc` raised by `method`.

    Overrides are searched along the whole class hierarchy before the defaults. INTERNAL always
    gets a generic message with a reference, and the traceback is logged under it, with the
    `secrets` (values from the request) scrubbed out of it.
    """
    code = _lookup(exc, overrides) or _lookup(exc, DEFAULT_CODES) or grpc.StatusCode.INTERNAL
    if code is grpc.StatusCode.INTERNAL:
        ref = uuid.uuid4().hex[:12]
        trace = scrub("".join(traceback.format_exception(exc)).rstrip(), secrets)
        _log.error("internal error in %s (ref %s):\n%s", method, ref, trace)
        return code, f"internal error in {method}; see the plugin log (ref {ref})"
    message = exc.message if isinstance(exc, AmberError) else str(exc)
    return code, scrub(message or type(exc).__name__, secrets)


def _already_aborted(context: Any) -> bool:
    # `context.abort()` sets the code and then raises a bare Exception; let that one through.
    code = getattr(context, "code", None)
    return callable(code) and code() is not None


def _abort(
    context: Any, exc: Exception, method: str, overrides: CodeTable, request: object
) -> None:
    code, message = status_for(exc, method, overrides, secret_values(request))
    context.abort(code, message)


def rpc_errors(overrides: CodeTable | None = None) -> Callable[[_F], _F]:
    """Decorate a servicer method so domain errors abort the call with the mapped code.

    Works for unary methods and for server-streaming methods written as generators. The
    method's name is used in log lines and in the generic INTERNAL message.
    """
    table: CodeTable = overrides or _EMPTY

    def decorate(fn: _F) -> _F:
        method = fn.__name__

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def stream(self: object, request: object, context: Any) -> Iterator[object]:
                try:
                    yield from fn(self, request, context)
                except Exception as exc:
                    if _already_aborted(context):
                        raise
                    _abort(context, exc, method, table, request)

            return cast("_F", stream)

        @functools.wraps(fn)
        def unary(self: object, request: object, context: Any) -> object:
            try:
                return fn(self, request, context)
            except Exception as exc:
                if _already_aborted(context):
                    raise
                _abort(context, exc, method, table, request)
                raise  # unreachable: abort() raises; keeps the type checker honest

        return cast("_F", unary)

    return decorate
