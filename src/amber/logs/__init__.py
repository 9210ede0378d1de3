"""One logging setup for every edge: structured lines for servers, short lines for people.

Servers (`amber node`, `amber controller`) write one JSON object a line on stderr, with the
same keys in every line — `time` (UTC, ISO 8601, milliseconds), `level`, `logger`, `message`
and, inside a CSI call, `request_id` — so that a cluster's log shipper can parse each line.
Fields a caller attaches as `extra={"fields": {...}}` (the CSI call's method, ids, code and
duration) are merged into the object. On a terminal the same records are written as logfmt
(`time=… level=info logger=… msg="…" key=value`), which people read and tools still parse.

The `amber` command shows only warnings and errors, as `warning: MESSAGE` — one line each,
in the words of the error lines — unless `--verbose` asks for every detail (DEBUG, with time
and logger). Nothing is printed as a plain-text line beside the structured ones: Python
warnings and the gRPC library's own loggers go through the same handler.

`request_scope(id)` ties every record logged inside it, in any module, to one request.
Secrets never reach a logger: the CSI edge redacts requests before it logs them
(`amber.csi.logging`), and every layer that words a message from a target's answer scrubs the
secret values it knows out of it first (`scrub`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from enum import StrEnum
from typing import IO, Any, Final

__all__ = [
    "FIELDS",
    "MIN_SCRUB_LENGTH",
    "REDACTED",
    "JsonFormatter",
    "LogStyle",
    "LogfmtFormatter",
    "PeopleFormatter",
    "current_request_id",
    "new_request_id",
    "request_scope",
    "scrub",
    "setup_cli_logging",
    "setup_server_logging",
]

FIELDS: Final = "fields"
"""The `extra` key whose dict is merged into a structured line."""
REDACTED: Final = "***"
"""What a secret value is replaced with."""
MIN_SCRUB_LENGTH: Final = 4
"""Shorter secret values are not scrubbed from free text: replacing "on" or "1" everywhere
would garble messages without hiding anything."""

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "amber_request_id", default=None
)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of a secret value (of a useful length) replaced."""
    for value in sorted(secrets, key=len, reverse=True):
        if len(value) >= MIN_SCRUB_LENGTH:
            text = text.replace(value, REDACTED)
    return text


def new_request_id() -> str:
    """A short random id for one request (16 hex digits)."""
    return os.urandom(8).hex()


def current_request_id() -> str | None:
    """The id of the request being served in this thread or task, if any."""
    return _request_id.get()


@contextlib.contextmanager
def request_scope(request_id: str | None = None) -> Iterator[str]:
    """Tag every record logged inside with `request_id` (a new one if None)."""
    rid = request_id or new_request_id()
    token = _request_id.set(rid)
    try:
        yield rid
    finally:
        _request_id.reset(token)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = _request_id.get()
        return True


def _structured(record: logging.LogRecord) -> dict[str, Any]:
    data: dict[str, Any] = {
        "time": _iso_time(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": record.getMessage(),
    }
    request_id = getattr(record, "request_id", None)
    if request_id:
        data["request_id"] = request_id
    fields = getattr(record, FIELDS, None)
    if isinstance(fields, Mapping):
        for key, value in fields.items():
            data.setdefault(str(key), value)
    if record.exc_info and record.levelno >= logging.ERROR:
        data["error"] = _exception_text(record)
    return data


def _iso_time(created: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created % 1 * 1000):03d}Z"


def _exception_text(record: logging.LogRecord) -> str:
    exc = record.exc_info[1] if record.exc_info else None
    return f"{type(exc).__name__}: {exc}" if exc is not None else ""


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            _structured(record), ensure_ascii=False, separators=(",", ":"), default=str
        )


class LogfmtFormatter(logging.Formatter):
    """The same keys as `JsonFormatter`, as logfmt (`key=value`, quoted when needed)."""

    def format(self, record: logging.LogRecord) -> str:
        data = _structured(record)
        return " ".join(
            f"{'msg' if key == 'message' else key}={_logfmt_value(value)}"
            for key, value in data.items()
        )


def _logfmt_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text and not any(c in text for c in ' "=\\\n\t'):
        return text
    return json.dumps(text, ensure_ascii=False)


class PeopleFormatter(logging.Formatter):
    """`warning: MESSAGE` for the `amber` command; with `verbose`, time, level and logger."""

    def __init__(self, *, verbose: bool) -> None:
        super().__init__()
        self._verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if self._verbose:
            when = time.strftime("%H:%M:%S", time.localtime(record.created))
            text = f"{when} {record.levelname.lower()} {record.name}: {message}"
            if record.exc_info:
                text += "\n" + self.formatException(record.exc_info)
            return text
        return f"{record.levelname.lower()}: {message}"


class LogStyle(StrEnum):
    """How a server writes its lines."""

    AUTO = "auto"
    """logfmt on a terminal, JSON otherwise."""
    JSON = "json"
    LOGFMT = "logfmt"


def setup_server_logging(
    *, verbose: bool = False, style: LogStyle = LogStyle.AUTO, stream: IO[str] | None = None
) -> logging.Handler:
    """Structured lines on `stream` (stderr) for every logger; DEBUG with `verbose`."""
    stream = stream or sys.stderr
    if style is LogStyle.AUTO:
        style = LogStyle.LOGFMT if _is_terminal(stream) else LogStyle.JSON
    formatter = JsonFormatter() if style is LogStyle.JSON else LogfmtFormatter()
    # The gRPC library logs at INFO about its own plumbing: only its warnings matter here.
    quiet = {"grpc": logging.WARNING} if not verbose else {}
    return _install(formatter, logging.DEBUG if verbose else logging.INFO, stream, quiet)


def setup_cli_logging(*, verbose: bool = False, stream: IO[str] | None = None) -> logging.Handler:
    """One short line per warning or error for people; every detail with `verbose`."""
    level = logging.DEBUG if verbose else logging.WARNING
    return _install(PeopleFormatter(verbose=verbose), level, stream or sys.stderr, {})


def _install(
    formatter: logging.Formatter, level: int, stream: IO[str], levels: Mapping[str, int]
) -> logging.Handler:
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_amber", False):
            root.removeHandler(old)
    handler = logging.StreamHandler(stream)
    handler._amber = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    root.addHandler(handler)
    root.setLevel(level)
    for name, logger_level in levels.items():
        logging.getLogger(name).setLevel(logger_level)
    logging.captureWarnings(True)
    return handler


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
