"""One structured log line per RPC, and redaction so that no secret is ever logged.

`RpcLogInterceptor` wraps every CSI method handler, runs it inside a request scope (every line
logged during the call carries its `request_id`, see `amber.logs`) and, when the call ends,
logs one structured record: the method, the object identifiers found in the request (and in the
reply: the new `volume_id` of a CreateVolume), the status code, the duration and, on error, the
message.
With `log_requests=True` the whole request is included, redacted.

`redact(message)` turns any protobuf message into a JSON-ready dict where:

- every field marked with the spec's `csi_secret` option, and every field named `secrets`, keeps
  its keys but loses its values;
- every map value whose key contains "secret", "password", "key" or "token" (any case) is
  replaced, wherever the map is (StorageClass parameters, volume_context, publish_context...);
- every `mount_flags` entry of the form `name=value` with such a name keeps only its name
  (the spec warns that mount flags MAY carry sensitive data).

The same walk collects the secret values themselves (`secret_values`), so error messages can be
scrubbed (`amber.logs.scrub`) before they are logged or sent back to the CO.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from amber.csi._proto import csi_pb2
from amber.csi.interceptors import WrappingInterceptor
from amber.logs import FIELDS, REDACTED, new_request_id, request_scope, scrub

__all__ = [
    "QUIET_METHODS",
    "RpcLogInterceptor",
    "redact",
    "secret_values",
]

SENSITIVE_KEY_PARTS: Final = ("secret", "password", "key", "token")

ID_FIELDS: Final = (
    "name",
    "volume_id",
    "source_volume_id",
    "snapshot_id",
    "group_snapshot_id",
    "base_snapshot_id",
    "target_snapshot_id",
    "node_id",
)
"""Request (and reply) fields copied to the top level of the log line when present."""

QUIET_METHODS: Final = frozenset(
    {
        "/csi.v1.Identity/Probe",
        "/csi.v1.Identity/GetPluginInfo",
        "/csi.v1.Identity/GetPluginCapabilities",
        "/csi.v1.Controller/ControllerGetCapabilities",
        "/csi.v1.Node/NodeGetCapabilities",
        "/csi.v1.GroupController/GroupControllerGetCapabilities",
    }
)
"""Polled by the sidecars every few seconds: logged at DEBUG when they succeed."""

_SERVER_FAULTS: Final = frozenset(
    {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
)
_WRAPPERS: Final = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Bool", "Int32", "Int64", "UInt32", "UInt64", "Float", "Double", "String")
)

# ---------------------------------------------------------------------------------------------
# Redaction
# ---------------------------------------------------------------------------------------------

_secret_field_cache: dict[str, bool] = {}


def _is_secret_field(field: FieldDescriptor) -> bool:
    cached = _secret_field_cache.get(field.full_name)
    if cached is None:
        marked = any(
            option.is_extension and option.number == csi_pb2.CSI_SECRET_FIELD_NUMBER and bool(on)
            for option, on in field.GetOptions().ListFields()
        )
        cached = marked or field.name == "secrets"
        _secret_field_cache[field.full_name] = cached
    return cached


def _is_sensitive_key(key: object) -> bool:
    lowered = str(key).lower()
    return any(part in lowered for part in SENSITIVE_KEY_PARTS)


def _message_type(field: FieldDescriptor) -> Descriptor:
    message_type = field.message_type
    if message_type is None:  # pragma: no cover - protobuf sets it for every message field
        raise TypeError(f"{field.full_name} has no message type")
    return message_type


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.type == FieldDescriptor.TYPE_MESSAGE and _message_type(field).GetOptions().map_entry
    )


class _Walker:
    """Converts a message to plain data, replacing secrets and remembering what it replaced."""

    def __init__(self) -> None:
        self.found: set[str] = set()

    def message(self, msg: Message) -> dict[str, Any]:
        return {field.name: self.field(field, value) for field, value in msg.ListFields()}

    def field(self, field: FieldDescriptor, value: Any) -> Any:
        if _is_secret_field(field):
            return self.hidden(field, value)
        if _is_map(field):
            return self.map(field, value)
        if field.is_repeated:
            return [self.single(field, item) for item in value]
        return self.single(field, value)

    def hidden(self, field: FieldDescriptor, value: Any) -> Any:
        if _is_map(field):
            self.found.update(str(v) for v in value.values() if isinstance(v, str | bytes))
            return dict.fromkeys(value, REDACTED)
        items = list(value) if field.is_repeated else [value]
        self.found.update(str(v) for v in items if isinstance(v, str | bytes))
        return [REDACTED] * len(items) if field.is_repeated else REDACTED

    def map(self, field: FieldDescriptor, value: Any) -> dict[str, Any]:
        value_field = _message_type(field).fields_by_name["value"]
        out: dict[str, Any] = {}
        for key, item in value.items():
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                out[str(key)] = self.message(item)
            elif _is_sensitive_key(key):
                self.found.add(str(item))
                out[str(key)] = REDACTED
            else:
                out[str(key)] = item
        return out

    def single(self, field: FieldDescriptor, value: Any) -> Any:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return self.nested(_message_type(field).full_name, value)
        if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
            enum_value = field.enum_type.values_by_number.get(value)
            return enum_value.name if enum_value is not None else value
        if field.type == FieldDescriptor.TYPE_BYTES:
            return f"<{len(value)} bytes>"
        if field.name == "mount_flags" and isinstance(value, str):
            return self.mount_flag(value)
        return value

    def nested(self, full_name: str, value: Any) -> Any:
        if full_name in _WRAPPERS:
            return value.value
        if full_name == "google.protobuf.Timestamp":
            return value.ToJsonString()
        return self.message(value)

    def mount_flag(self, flag: str) -> str:
        name, sep, val = flag.partition("=")
        if sep and _is_sensitive_key(name):
            self.found.add(val)
            return f"{name}={REDACTED}"
        return flag


def redact(message: Message) -> dict[str, Any]:
    """The message as JSON-ready data with every secret replaced by `REDACTED`.

    Field names are the proto names; enums become their names; wrapper types their value;
    timestamps RFC 3339 strings. Unset fields are left out.
    """
    return _Walker().message(message)


def secret_values(message: object) -> set[str]:
    """The values `redact` would hide in `message` (empty for anything but a message)."""
    if not isinstance(message, Message):
        return set()
    walker = _Walker()
    walker.message(message)
    return {value for value in walker.found if value}


# ---------------------------------------------------------------------------------------------
# The interceptor
# ---------------------------------------------------------------------------------------------


def _identifiers(request: dict[str, Any], reply: dict[str, Any] | None) -> dict[str, str]:
    found = {k: v for k in ID_FIELDS if isinstance(v := request.get(k), str) and v}
    # Replies carry new identifiers one level down: CreateVolumeResponse.volume.volume_id.
    for nested in (reply or {}).values():
        if isinstance(nested, dict):
            for key in ID_FIELDS:
                value = nested.get(key)
                if key != "name" and isinstance(value, str) and value:
                    found.setdefault(key, value)
    return found


def _details(context: Any) -> str | None:
    details = context.details()
    if isinstance(details, bytes):
        return details.decode("utf-8", errors="replace")
    return details if isinstance(details, str) else None


class RpcLogInterceptor(WrappingInterceptor):
    """Logs one JSON line per RPC to `logger` (default: `amber.csi.rpc`).

    Levels: INFO for success (DEBUG for the polled methods in `quiet_methods`), WARNING for
    errors the CO should handle, ERROR for INTERNAL, UNKNOWN and DATA_LOSS. The structured
    record is also attached to the log record as `record.csi_rpc`.

    It is also the last line of defence: an exception that escapes a servicer method without
    having been mapped (a method written without `@rpc_errors`) is answered with INTERNAL and
    a generic message, never with the exception's text.
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        log_requests: bool = False,
        quiet_methods: Iterable[str] = QUIET_METHODS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger or logging.getLogger("amber.csi.rpc")
        self._log_requests = log_requests
        self._quiet = frozenset(quiet_methods)
        self._clock = clock

    def _wrap_unary(self, method: str, inner: Callable[[Any, Any], Any]) -> Callable[..., Any]:
        def behavior(request: Any, context: Any) -> Any:
            start = self._clock()
            response = None
            with request_scope():
                try:
                    response = inner(request, context)
                except Exception as exc:
                    _abort_unmapped(context, exc, method, request)
                    raise
                finally:
                    self._emit(method, request, response, context, start=start)
            return response

        return behavior

    def _wrap_stream(
        self, method: str, inner: Callable[[Any, Any], Iterator[Any]]
    ) -> Callable[..., Iterator[Any]]:
        def behavior(request: Any, context: Any) -> Iterator[Any]:
            start = self._clock()
            sent = 0
            rid = new_request_id()
            try:
                for response in _scoped(rid, inner(request, context)):
                    sent += 1
                    yield response
            except Exception as exc:
                _abort_unmapped(context, exc, method, request)
                raise
            finally:
                with request_scope(rid):
                    self._emit(method, request, None, context, start=start, responses=sent)

        return behavior

    def _emit(
        self,
        method: str,
        request: Any,
        response: Any,
        context: Any,
        *,
        start: float,
        responses: int | None = None,
    ) -> None:
        try:
            record = self._record(
                method, request, response, context, start=start, responses=responses
            )
            code = grpc.StatusCode[record["code"]]
            level = self._level(method, code)
            if self._logger.isEnabledFor(level):
                summary = f"{method.rsplit('/', 1)[-1]} {record['code']}"
                self._logger.log(level, summary, extra={"csi_rpc": record, FIELDS: record})
        except Exception:  # a broken log line must never fail the RPC
            self._logger.exception("could not log RPC %s", method)

    def _record(
        self,
        method: str,
        request: Any,
        response: Any,
        context: Any,
        *,
        start: float,
        responses: int | None,
    ) -> dict[str, Any]:
        duration_ms = round((self._clock() - start) * 1000.0, 3)
        code = context.code()
        if code is None:
            code = grpc.StatusCode.OK if context.is_active() else grpc.StatusCode.CANCELLED
        request_data = redact(request) if isinstance(request, Message) else {}
        reply_data = redact(response) if isinstance(response, Message) else None
        record: dict[str, Any] = {"method": method}
        record.update(_identifiers(request_data, reply_data))
        record["code"] = code.name
        record["duration_ms"] = duration_ms
        if responses is not None:
            record["responses"] = responses
        if code is not grpc.StatusCode.OK:
            message = _details(context)
            if message:
                record["message"] = scrub(message, secret_values(request))
        if self._log_requests:
            record["request"] = request_data
        return record

    def _level(self, method: str, code: grpc.StatusCode) -> int:
        if code is grpc.StatusCode.OK:
            return logging.DEBUG if method in self._quiet else logging.INFO
        if code in _SERVER_FAULTS:
            return logging.ERROR
        return logging.WARNING


def _scoped(request_id: str, responses: Iterator[Any]) -> Iterator[Any]:
    """Run each step of a streaming handler inside the call's request scope."""
    while True:
        with request_scope(request_id):
            try:
                response = next(responses)
            except StopIteration:
                return
        yield response


def _abort_unmapped(context: Any, exc: Exception, method: str, request: Any) -> None:
    """Answer INTERNAL (generic message) for an exception no servicer mapped; else do nothing."""
    code = context.code()
    if code is grpc.StatusCode.UNIMPLEMENTED and isinstance(exc, NotImplementedError):
        # The generated base class of a service this endpoint does not serve: a normal answer
        # (the CO asks; we say no), not a crash to print a traceback for.
        context.abort(code, f"{method} is not served by this endpoint")
    if code is not None:
        return  # aborted by @rpc_errors, or a code was set deliberately
    # Imported here: amber.csi.errors imports this module for `secret_values`.
    from amber.csi.errors import status_for

    code, message = status_for(exc, method.rsplit("/", 1)[-1], secrets=secret_values(request))
    context.abort(code, message)
