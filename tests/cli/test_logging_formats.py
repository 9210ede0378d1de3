"""amber.logs formatters (pure logic): the same keys as JSON or logfmt, request ids by scope."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from amber.logs import FIELDS, LogStyle, request_scope, setup_cli_logging, setup_server_logging


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def _log(stream: io.StringIO) -> None:
    log = logging.getLogger("amber.test")
    log.info("outside a request")
    with request_scope("abcd1234abcd1234"):
        log.warning("inside %s", "it", extra={FIELDS: {"method": "/csi.v1.Node/X", "code": "OK"}})


def test_json_lines_share_their_keys_and_carry_the_request_id() -> None:
    stream = io.StringIO()
    setup_server_logging(style=LogStyle.JSON, stream=stream)
    _log(stream)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert list(first) == ["time", "level", "logger", "message"]
    assert first["level"] == "info"
    assert second["request_id"] == "abcd1234abcd1234"
    assert (second["message"], second["method"], second["code"]) == (
        "inside it",
        "/csi.v1.Node/X",
        "OK",
    )


def test_logfmt_on_a_terminal_and_short_lines_for_people() -> None:
    stream = io.StringIO()
    setup_server_logging(style=LogStyle.LOGFMT, stream=stream)
    _log(stream)
    lines = stream.getvalue().splitlines()
    assert 'msg="outside a request"' in lines[0]
    assert 'level=warning logger=amber.test msg="inside it" request_id=abcd1234abcd1234' in lines[1]
    assert "method=/csi.v1.Node/X code=OK" in lines[1]

    people = io.StringIO()
    setup_cli_logging(stream=people)
    _log(people)
    assert people.getvalue() == "warning: inside it\n"  # INFO hidden, no logger name
