"""One logging setup (amber.logs): structured lines for the servers, one short line per
warning for people, --verbose for detail (issue 16, item 7). Real processes, real sockets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.cli.runner import amber

KEYS = ("time", "level", "logger", "message")


@contextmanager
def serving(tmp_path: Path, *args: str) -> Iterator[tuple[str, Path]]:
    """`amber ARGS --endpoint unix://...` with stderr to a file (not a terminal: JSON)."""
    endpoint = f"unix://{tmp_path / 'csi.sock'}"
    log = tmp_path / "server.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "amber", *args, "--endpoint", endpoint],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
        )
    try:
        for _ in range(200):  # bounded: each try is a real call with its own timeout
            if proc.poll() is not None:
                raise AssertionError(log.read_text())
            info = csi(endpoint, "info")
            if info.returncode == 0:
                break
        yield endpoint, log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def csi(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amber", "csi", *args, "--endpoint", endpoint],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def structured(log: Path) -> list[dict[str, object]]:
    """Every line of the log, each of which must be one JSON object with the common keys."""
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    for line in lines:
        assert all(key in line for key in KEYS), line
    return lines


def test_controller_answers_unimplemented_without_a_traceback(tmp_path: Path) -> None:
    with serving(tmp_path, "controller") as (endpoint, log):
        refused = csi(endpoint, "create-volume", "x", "--size", "1Gi")
        assert refused.returncode != 0
        assert "UNIMPLEMENTED" in refused.stderr
    text = log.read_text()
    assert "Traceback" not in text
    lines = structured(log)  # no plain-text line mixed in
    (call,) = [line for line in lines if line.get("method") == "/csi.v1.Controller/CreateVolume"]
    assert call["code"] == "UNIMPLEMENTED"
    assert call["level"] == "warning"
    assert call["logger"] == "amber.csi.rpc"
    assert call["message"] == "CreateVolume UNIMPLEMENTED"
    assert len(str(call["request_id"])) == 16
    assert str(call["time"]).endswith("Z")
    assert any(line["message"] == "CSI server stopped" for line in lines)


def test_node_lines_are_json_with_a_request_id_per_call(pool_dir: Path, tmp_path: Path) -> None:
    with serving(
        tmp_path, "--pool", str(pool_dir), "node", "--node-id", "n1", "--log-requests"
    ) as (endpoint, log):
        made = csi(endpoint, "create-volume", "v1", "--size", "64Mi")
        assert made.returncode == 0, made.stderr
    lines = structured(log)
    (call,) = [line for line in lines if line.get("method") == "/csi.v1.Controller/CreateVolume"]
    assert (call["code"], call["level"], call["name"]) == ("OK", "info", "v1")
    ids = [line["request_id"] for line in lines if "method" in line]
    assert len(ids) == len(set(ids))  # one id per call


def test_cli_warnings_are_one_short_line_and_verbose_adds_detail(pool_dir: Path) -> None:
    crashed = amber(
        pool_dir, "volume", "create", "v", "--size", "64Mi", crash_at="volume.create.filled"
    )
    assert crashed.returncode == -signal.SIGKILL
    listed = amber(pool_dir, "volume", "list")
    assert listed.returncode == 0
    assert listed.stderr.splitlines() == [
        "warning: recovered interrupted create_volume of volume:v"
    ]
    assert "WARNING amber." not in listed.stderr

    quiet = amber(pool_dir, "pool", "status")
    assert quiet.stderr == ""
    verbose = amber(pool_dir, "--verbose", "volume", "create", "w", "--size", "64Mi")
    assert verbose.returncode == 0, verbose.stderr
    assert " debug amber.pool.pool: opened pool " in verbose.stderr  # time, level, logger
    assert " debug amber.system.run: running mkfs" in verbose.stderr  # every tool it runs
