"""Helpers for the driver tests: a real `amber node` process on a real pool, and a client.

`start_driver` runs `python -m amber --pool POOL node --endpoint unix://SOCK --node-id NODE`
(or `amber controller`), waits until the socket answers, and returns a `DriverProcess` with gRPC
stubs. `DriverProcess.stop()` sends SIGTERM and asserts a clean exit with the socket removed.
`Csi` wraps the stubs with request builders so tests read like the spec's sentences.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from amber.csi._proto import csi_pb2, csi_pb2_grpc
from amber.domain.units import MiB
from amber.system import mount
from tests.csi.plumbing import wait_for

START_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0
RPC_TIMEOUT = 60.0
NODE = "node-a"
REPO = Path(__file__).resolve().parents[2]

Code = grpc.StatusCode
Mode = csi_pb2.VolumeCapability.AccessMode


@dataclass
class DriverProcess:
    """A running driver and the files around it."""

    proc: subprocess.Popen[bytes]
    socket: Path
    pool: Path | None
    node_id: str
    log: Path
    rundir: Path
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> Csi:
        channel = grpc.insecure_channel(self.endpoint)
        self.channels.append(channel)
        return Csi(channel, self.node_id)

    def rpc_lines(self) -> list[dict[str, Any]]:
        """The structured RPC log lines (JSON objects) the driver wrote to stderr."""
        text = self.log.read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def stop(self) -> None:
        """SIGTERM; the driver must exit 0 and remove its socket."""
        for channel in self.channels:
            channel.close()
        self.channels.clear()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=EXIT_TIMEOUT)
        assert code == 0, f"driver exited {code}:\n{self.log.read_text(errors='replace')[-4000:]}"
        assert not self.socket.exists()

    def kill(self) -> None:
        for channel in self.channels:
            channel.close()
        self.channels.clear()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=EXIT_TIMEOUT)

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.rundir, ignore_errors=True)


def start_driver(
    pool: Path | None,
    *,
    node_id: str = NODE,
    mode: str = "node",
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> DriverProcess:
    """Start a driver process and wait until it answers on its socket."""
    rundir = Path(tempfile.mkdtemp(prefix="acsi-", dir="/tmp"))
    sock = rundir / "csi.sock"
    log = rundir / "driver.log"
    command = [sys.executable, "-m", "amber"]
    if pool is not None:
        command += ["--pool", str(pool)]
    command += [mode, f"--endpoint=unix://{sock}", "--grace=20"]
    if mode == "node":
        command.append(f"--node-id={node_id}")
    command += list(extra)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd=REPO,
            env={**os.environ, **(env or {})},
        )
    driver = DriverProcess(proc, sock, pool, node_id, log, rundir)
    try:
        wait_for(lambda: proc.poll() is not None or sock.exists(), START_TIMEOUT, "the socket")
        if proc.poll() is not None:
            raise AssertionError(f"driver exited {proc.returncode}: {log.read_text()}")
        with grpc.insecure_channel(driver.endpoint) as channel:
            grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
    except BaseException:
        driver.cleanup()
        raise
    return driver


@contextmanager
def running_driver(pool: Path | None, **kwargs: Any) -> Iterator[DriverProcess]:
    driver = start_driver(pool, **kwargs)
    try:
        yield driver
        driver.stop()
    finally:
        driver.cleanup()


# -- requests -----------------------------------------------------------------------------


def mount_cap(
    fs_type: str = "", mode: int = Mode.SINGLE_NODE_WRITER, flags: Sequence[str] = ()
) -> Any:
    cap = csi_pb2.VolumeCapability(access_mode=Mode(mode=mode))
    cap.mount.fs_type = fs_type
    cap.mount.mount_flags.extend(flags)
    return cap


def block_cap(mode: int = Mode.SINGLE_NODE_WRITER) -> Any:
    cap = csi_pb2.VolumeCapability(access_mode=Mode(mode=mode))
    cap.block.SetInParent()
    return cap


def snapshot_source(snapshot_id: str) -> Any:
    source = csi_pb2.VolumeContentSource
    return source(snapshot=source.SnapshotSource(snapshot_id=snapshot_id))


def volume_source(volume_id: str) -> Any:
    source = csi_pb2.VolumeContentSource
    return source(volume=source.VolumeSource(volume_id=volume_id))


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    """Run `call`, which must fail; return the error."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def expect_code(code: grpc.StatusCode, call: Callable[[], Any]) -> str:
    """Run `call`, which must fail with `code`; return the error message."""
    error = rpc_error(call)
    assert error.code() is code, f"expected {code.name}, got {error.code().name}: {error.details()}"
    return str(error.details())


class Csi:
    """The three CSI services over one channel, with request builders."""

    def __init__(self, channel: grpc.Channel, node_id: str) -> None:
        self.identity = csi_pb2_grpc.IdentityStub(channel)
        self.controller = csi_pb2_grpc.ControllerStub(channel)
        self.node = csi_pb2_grpc.NodeStub(channel)
        self.node_id = node_id

    # controller

    def create(
        self,
        name: str,
        size: int = 64 * MiB,
        *,
        cap: Any = None,
        limit: int = 0,
        source: Any = None,
        parameters: dict[str, str] | None = None,
        requisite: Sequence[str] | None = None,
    ) -> Any:
        request = csi_pb2.CreateVolumeRequest(
            name=name,
            volume_capabilities=[cap if cap is not None else mount_cap()],
            parameters=parameters or {},
            volume_content_source=source,
        )
        if size or limit:
            request.capacity_range.required_bytes = size
            request.capacity_range.limit_bytes = limit
        if requisite is not None:
            for node in requisite:
                request.accessibility_requirements.requisite.add(
                    segments={"topology.amber.csi.dev/node": node}
                )
        return self.controller.CreateVolume(request, timeout=RPC_TIMEOUT).volume

    def delete(self, volume_id: str) -> None:
        self.controller.DeleteVolume(
            csi_pb2.DeleteVolumeRequest(volume_id=volume_id), timeout=RPC_TIMEOUT
        )

    def snapshot(self, volume_id: str, name: str, parameters: dict[str, str] | None = None) -> Any:
        request = csi_pb2.CreateSnapshotRequest(
            name=name, source_volume_id=volume_id, parameters=parameters or {}
        )
        return self.controller.CreateSnapshot(request, timeout=RPC_TIMEOUT).snapshot

    def delete_snapshot(self, snapshot_id: str) -> None:
        self.controller.DeleteSnapshot(
            csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot_id), timeout=RPC_TIMEOUT
        )

    def list_volumes(self, max_entries: int = 0, token: str = "") -> Any:
        request = csi_pb2.ListVolumesRequest(max_entries=max_entries, starting_token=token)
        return self.controller.ListVolumes(request, timeout=RPC_TIMEOUT)

    def list_snapshots(self, **fields: Any) -> Any:
        request = csi_pb2.ListSnapshotsRequest(**fields)
        return self.controller.ListSnapshots(request, timeout=RPC_TIMEOUT)

    def get_volume(self, volume_id: str) -> Any:
        request = csi_pb2.ControllerGetVolumeRequest(volume_id=volume_id)
        return self.controller.ControllerGetVolume(request, timeout=RPC_TIMEOUT)

    def expand(self, volume_id: str, size: int, cap: Any = None) -> Any:
        request = csi_pb2.ControllerExpandVolumeRequest(
            volume_id=volume_id,
            capacity_range=csi_pb2.CapacityRange(required_bytes=size),
            volume_capability=cap,
        )
        return self.controller.ControllerExpandVolume(request, timeout=RPC_TIMEOUT)

    # node

    def stage(self, volume_id: str, staging: Path, cap: Any = None) -> None:
        request = csi_pb2.NodeStageVolumeRequest(
            volume_id=volume_id,
            staging_target_path=str(staging),
            volume_capability=cap if cap is not None else mount_cap(),
        )
        self.node.NodeStageVolume(request, timeout=RPC_TIMEOUT)

    def unstage(self, volume_id: str, staging: Path) -> None:
        request = csi_pb2.NodeUnstageVolumeRequest(
            volume_id=volume_id, staging_target_path=str(staging)
        )
        self.node.NodeUnstageVolume(request, timeout=RPC_TIMEOUT)

    def publish(
        self,
        volume_id: str,
        staging: Path,
        target: Path,
        cap: Any = None,
        *,
        read_only: bool = False,
    ) -> None:
        request = csi_pb2.NodePublishVolumeRequest(
            volume_id=volume_id,
            staging_target_path=str(staging),
            target_path=str(target),
            volume_capability=cap if cap is not None else mount_cap(),
            readonly=read_only,
        )
        self.node.NodePublishVolume(request, timeout=RPC_TIMEOUT)

    def unpublish(self, volume_id: str, target: Path) -> None:
        request = csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target))
        self.node.NodeUnpublishVolume(request, timeout=RPC_TIMEOUT)

    def stats(self, volume_id: str, path: Path | str) -> Any:
        request = csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=str(path))
        return self.node.NodeGetVolumeStats(request, timeout=RPC_TIMEOUT)

    def node_expand(self, volume_id: str, path: Path, size: int, cap: Any = None) -> Any:
        request = csi_pb2.NodeExpandVolumeRequest(
            volume_id=volume_id,
            volume_path=str(path),
            capacity_range=csi_pb2.CapacityRange(required_bytes=size),
            volume_capability=cap,
        )
        return self.node.NodeExpandVolume(request, timeout=RPC_TIMEOUT)


# -- state ------------------------------------------------------------------------------


def pool_state(csi: Csi, pool: Path, *dirs: Path) -> dict[str, Any]:
    """Everything a bad request must leave unchanged: objects, images, mounts, loops."""
    volumes = sorted(
        (e.volume.volume_id, e.volume.capacity_bytes) for e in csi.list_volumes().entries
    )
    snapshots = sorted(e.snapshot.snapshot_id for e in csi.list_snapshots().entries)
    images = sorted(str(p.relative_to(pool)) for p in pool.glob("*s/*.img"))
    roots = [str(pool), *map(str, dirs)]
    mounts = sorted(
        str(m.target)
        for m in mount.mount_table()
        if any(str(m.target).startswith(r + "/") for r in roots)
    )
    return {"volumes": volumes, "snapshots": snapshots, "images": images, "mounts": mounts}


def image_of(pool: Path, volume_name: str) -> Path:
    """The image file of a volume, read from the pool's metadata (read-only)."""
    uri = f"file:{pool / 'amber.db'}?mode=ro"
    # closing(): a connection's own `with` only ends a transaction; left open, it keeps the pool
    # filesystem busy at teardown.
    with closing(sqlite3.connect(uri, uri=True)) as db:
        row = db.execute("SELECT image FROM volumes WHERE name = ?", (volume_name,)).fetchone()
    assert row is not None, volume_name
    return Path(row[0])
