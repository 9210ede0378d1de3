"""Helpers for the backup snapshot tests: a TCP proxy in front of moto (to cut and restore the
target's network), a targets file, direct access to pool images and repositories, and the
requests moto logged."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sqlite3
import threading
import time
from pathlib import Path

from amber.backup.keys import Password
from amber.backup.repository import Repository, open_repository
from amber.blobstore.s3store import S3Config, S3Store

PASSWORD = "repo-passw0rd-never-logged"


class TcpProxy:
    """Forwards 127.0.0.1:port to an upstream; `block()` refuses and cuts connections."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.port = 0
        self.delay = 0.0
        """Seconds slept per 64 KiB forwarded (throttling)."""
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.unblock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def unblock(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def block(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    close = block

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def write_targets(
    directory: Path, name: str, endpoint: str, prefix: str, keys: tuple[str, str]
) -> Path:
    """A targets file with one S3 target; secrets in files beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.secret-key").write_text(keys[1])
    (directory / f"{name}.password").write_text(PASSWORD)
    document = {
        "version": 1,
        "targets": {
            name: {
                "url": f"s3://amber-test/{prefix}",
                "options": {"endpoint": endpoint, "access-key": keys[0], "path-style": "true"},
                "secret_key_file": f"{name}.secret-key",
                "encryption": "aes-256-gcm",
                "password_file": f"{name}.password",
                "key_file": None,
            }
        },
    }
    path = directory / "targets.json"
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    return path


def repository(endpoint: str, prefix: str, keys: tuple[str, str]) -> Repository:
    store = S3Store(
        S3Config(
            bucket="amber-test",
            prefix=prefix,
            endpoint_url=endpoint,
            access_key=keys[0],
            secret_key=keys[1],
            path_style=True,
        )
    )
    return open_repository(store, Password(PASSWORD))


def volume_image(pool: Path, volume_id: str) -> Path:
    name = volume_id.rsplit(":", 1)[1]
    with contextlib.closing(sqlite3.connect(pool / "amber.db")) as db:
        row = db.execute("SELECT image FROM volumes WHERE name = ?", (name,)).fetchone()
    assert row is not None, f"no volume {name} in {pool}"
    return Path(row[0])


def pool_names(pool: Path, table: str, volume_name: str | None = None) -> set[str]:
    """Names in the pool's `volumes` or `snapshots` table (snapshots of `volume_name` only)."""
    assert table in ("volumes", "snapshots")
    sql = f"SELECT name FROM {table}"
    args: tuple[str, ...] = ()
    if volume_name is not None:
        sql, args = f"{sql} WHERE volume_name = ?", (volume_name,)
    with contextlib.closing(sqlite3.connect(pool / "amber.db")) as db:
        return {str(row[0]) for row in db.execute(sql, args)}


def listings(moto_log: Path, start: int, prefix: str) -> list[str]:
    """The requests moto logged (from byte `start` of its log) that list objects which may be
    backup manifests: `<prefix>/backups/`, or the whole repository under `<prefix>/`."""
    listing = re.compile(rf"[?&]prefix={re.escape(prefix)}(?:/|%2F)(?:backups(?:/|%2F))?[& ]")
    with moto_log.open("rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    return [line for line in text.splitlines() if "list-type=2" in line and listing.search(line)]


def restore_locks(repo: Repository, backup_id: str) -> list[str]:
    """Holders of the lock objects (live or not) of restores of `backup_id`."""
    return [i.holder for i in repo.locks.all() if f": restore {backup_id} to " in i.holder]
