"""Real S3 outages in the middle of a backup: the `amber` CLI talks to a moto server through a
TCP relay on 127.0.0.1 that the test takes down (connections reset, new ones refused) and
brings back after a few seconds. The relay, not moto, goes away, so the bucket survives the
outage as a real S3 service's would. The length of an outage is the behaviour under test, so
these tests wait for real seconds; they assert outcomes, never timings.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.blobstore.conftest import MotoServer
from tests.engine.conftest import init_with_test_chunks
from tests.engine.helpers import CHUNK, Cli, random_bytes, write_at

CHANGE_CHUNKS = 64
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class Relay:
    """A TCP relay to `upstream` that can be cut: once `after` requests whose bytes contain
    `marker` have been answered (HTTP 200 relayed back, so what they uploaded is stored whatever
    the machine's load), every connection is reset and the port refuses new ones for
    `seconds`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = _listen_below_ephemeral_ports()
        self.port: int = self._listener.getsockname()[1]
        self._mutex = threading.Lock()
        self._open: set[socket.socket] = set()
        self._marker: bytes | None = None
        self._after = 0
        self._answered = 0
        self._seconds = 0.0
        self.cuts = 0
        self.restored = threading.Event()
        threading.Thread(target=self._serve, args=(self._listener,), daemon=True).start()

    def cut_on(self, marker: bytes, *, after: int, seconds: float) -> None:
        with self._mutex:
            self._marker, self._after, self._seconds = marker, after, seconds
            self._answered = 0

    def close(self) -> None:
        self._drop_all()

    def _serve(self, listener: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                upstream = socket.create_connection(self.upstream)
                with self._mutex:
                    self._open |= {client, upstream}
                marked = [False]  # the connection's last request carried the marker
                for a, b, watch in ((client, upstream, True), (upstream, client, False)):
                    threading.Thread(
                        target=self._pump, args=(a, b, watch, marked), daemon=True
                    ).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, watch: bool, marked: list[bool]
    ) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if watch:
                    self._note_request(data, marked)
                sink.sendall(data)
                if not watch and marked[0] and data.startswith(b"HTTP/1.1 200"):
                    marked[0] = False
                    if self._answered_one():
                        return
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.close()

    def _note_request(self, data: bytes, marked: list[bool]) -> None:
        with self._mutex:
            if self._marker is not None and self._marker in data:
                marked[0] = True

    def _answered_one(self) -> bool:
        """Count an answered marker request; cut everything once `after` were answered."""
        with self._mutex:
            if self._marker is None:
                return False
            self._answered += 1
            if self._answered < self._after:
                return False
            self._marker = None
            self.cuts += 1
            seconds = self._seconds
        self._drop_all()
        threading.Timer(seconds, self._restore).start()
        return True

    def _drop_all(self) -> None:
        with self._mutex:
            doomed, self._open = self._open | {self._listener}, set()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            with contextlib.suppress(OSError):
                sock.close()

    def _restore(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._serve, args=(self._listener,), daemon=True).start()
        self.restored.set()


def _listen_below_ephemeral_ports() -> socket.socket:
    """A listener on a port the kernel never hands out as a client's source port. While the
    relay's port is closed, the client keeps reconnecting to it; with a port from the ephemeral
    range, one of those connects could be given that very port as its source and connect to
    itself (TCP self-connect), holding the port so the relay cannot listen again."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(10000, low), 200):
        with contextlib.suppress(OSError):
            return socket.create_server(("127.0.0.1", port), reuse_port=False)
    raise RuntimeError(f"no free port below {low}")


@pytest.fixture
def relay(moto: MotoServer) -> Iterator[Relay]:
    parts = urlsplit(moto.endpoint)
    server = Relay((parts.hostname or "127.0.0.1", parts.port or 80))
    yield server
    server.close()


@pytest.fixture
def flaky_target(cli: Cli, secrets_dir: Path, moto: MotoServer, relay: Relay) -> str:
    (secrets_dir / "s3-secret").write_text(moto.secret_key + "\n")
    cli.ok(
        "target", "add", "flaky", f"s3://{moto.bucket}/outage-{os.urandom(6).hex()}",
        "--endpoint", f"http://127.0.0.1:{relay.port}", "--path-style",
        "--access-key", moto.access_key, "--secret-key-file", str(secrets_dir / "s3-secret"),
        "--password-file", str(secrets_dir / "password"),
    )  # fmt: skip
    # a request cut off without a reset waits for the read timeout: keep that short here
    _set_options(cli, "flaky", {"read-timeout": "10"})
    init_with_test_chunks(cli, "flaky")
    return "flaky"


def _set_options(cli: Cli, target: str, options: dict[str, str]) -> None:
    document = json.loads(cli.config.read_text())
    document["targets"][target]["options"].update(options)
    cli.config.write_text(json.dumps(document))


def _volume(cli: Cli, seed: int) -> Path:
    image = cli.volume("v", f"{CHANGE_CHUNKS}Mi")
    write_at(image, 0, random_bytes(CHANGE_CHUNKS * CHUNK, seed))
    return cli.snapshot("v", "s1")


def _restores(cli: Cli, handle: str, snapshot: Path) -> None:
    assert cli.json("backup", "restore", handle, "r1")["complete"] is True
    restored = Path(cli.json("volume", "show", "r1")["volume"]["image"])
    assert restored.read_bytes() == snapshot.read_bytes()


def test_an_outage_during_a_backup_is_waited_out_with_status_lines(
    cli: Cli, flaky_target: str, relay: Relay
) -> None:
    snapshot = _volume(cli, 1)
    relay.cut_on(b"/data/", after=1, seconds=4.0)  # once the first pack is stored
    done = cli.run("--output", "json", "backup", "create", "s1", "--target", flaky_target)
    assert done.returncode == 0, done.stderr
    assert relay.cuts == 1
    assert relay.restored.is_set()
    waiting = [line for line in done.stderr.splitlines() if line.startswith("waiting for target")]
    assert waiting, done.stderr
    assert "flaky" in waiting[0]
    assert "retry budget" in waiting[0]
    report = json.loads(done.stdout)
    assert report["chunks_new"] == CHANGE_CHUNKS
    _restores(cli, report["handle"], snapshot)


def test_an_outage_longer_than_the_budget_fails_and_the_rerun_adopts_the_uploads(
    cli: Cli, flaky_target: str, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = _volume(cli, 2)
    relay.cut_on(b"/data/", after=2, seconds=8.0)  # two packs stored first
    _set_options(cli, flaky_target, {"retry-budget": "2"})  # the target's own budget
    failed = cli.run("backup", "create", "s1", "--target", flaky_target)
    assert failed.returncode == 9, failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "gave up after" in errors[0]
    assert relay.restored.wait(30)
    monkeypatch.setenv("AMBER_RETRY_BUDGET", "60")  # the environment wins over the target
    rerun = cli.backup("s1", flaky_target)
    assert rerun["packs_adopted"] >= 1
    assert rerun["bytes_stored"] < CHANGE_CHUNKS * CHUNK
    _restores(cli, rerun["handle"], snapshot)


def test_a_bad_retry_budget_is_one_line_and_exit_2(
    cli: Cli, flaky_target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMBER_RETRY_BUDGET", "soon")
    done = cli.run("backup", "list", "--target", flaky_target)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: AMBER_RETRY_BUDGET must be a duration of more than 0 and at most a day "
        "(e.g. 90s, 10m, or a number of seconds), not 'soon'"
    ]
