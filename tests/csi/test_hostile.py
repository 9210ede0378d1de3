"""Malformed and hostile requests get the spec's codes and change nothing; SIGTERM mid-call.

Plus property tests of the ID and name formats (pure functions, no driver needed).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amber.csi._proto import csi_pb2, csi_pb2_grpc
from amber.csi.ids import (
    IdKind,
    format_id,
    name_budget,
    node_segment,
    parse_id,
    validate_node_id,
)
from amber.csi.paging import BadToken, make_token, page, read_token
from amber.domain.errors import InvalidArgument
from amber.domain.names import pool_name, validate_name
from amber.domain.units import GiB, MiB
from amber.pool.locks import LockTable
from tests.csi.driver import (
    NODE,
    RPC_TIMEOUT,
    Code,
    Csi,
    DriverProcess,
    block_cap,
    expect_code,
    mount_cap,
    pool_state,
    rpc_error,
    start_driver,
)
from tests.csi.plumbing import wait_for

HOSTILE_IDS = [
    "../../etc/passwd",
    "/dev/sda",
    f"amber:v1:vol:{NODE}:../../etc",
    f"amber:v1:vol:{NODE}:a/b",
    f"amber:v1:vol:{NODE}:..",
    f"amber:v1:vol:{NODE}:.hidden",
    f"amber:v1:vol:{NODE}:x\0y",
    f"amber:v1:vol:{NODE}:" + "a" * 200,
    f"amber:v1:vol:{NODE}:pvc:extra",
    f"amber:v2:vol:{NODE}:pvc-target",
    f"amber:v1:snap:{NODE}:pvc-target",
    f"amber:v1:vol:../{NODE}:pvc-target",
    f"AMBER:v1:vol:{NODE}:pvc-target",
    "amber:v1:vol::pvc-target",
    "x" * 5000,
    "ünïcødé-💥",
]


@pytest.fixture
def state(csi: Csi, csi_pool: Path, work: Path) -> Callable[[], dict[str, Any]]:
    """The pool's observable state (objects, images, mounts), to compare before and after."""
    return lambda: pool_state(csi, csi_pool, work)


@pytest.fixture(scope="module")
def victim(csi: Csi, work: Path) -> tuple[str, Path, Path]:
    """A staged and published volume that hostile requests must not disturb."""
    volume = csi.create("pvc-target", 64 * MiB).volume_id
    staging, target = work / "victim-staging", work / "victim-target"
    staging.mkdir()
    csi.stage(volume, staging)
    csi.publish(volume, staging, target)
    (target / "precious").write_text("data")
    return volume, staging, target


@pytest.mark.parametrize("bad_id", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
def test_hostile_volume_ids(
    csi: Csi, csi_pool: Path, work: Path, victim: tuple[str, Path, Path], bad_id: str
) -> None:
    _, staging, target = victim
    before = pool_state(csi, csi_pool, work)
    other = work / "hostile-target"
    expect_code(Code.NOT_FOUND, lambda: csi.get_volume(bad_id))
    expect_code(Code.NOT_FOUND, lambda: csi.stage(bad_id, staging))
    expect_code(Code.NOT_FOUND, lambda: csi.publish(bad_id, staging, other))
    expect_code(Code.NOT_FOUND, lambda: csi.unpublish(bad_id, target))
    expect_code(Code.NOT_FOUND, lambda: csi.unstage(bad_id, staging))
    expect_code(Code.NOT_FOUND, lambda: csi.stats(bad_id, target))
    expect_code(Code.NOT_FOUND, lambda: csi.expand(bad_id, GiB))
    expect_code(Code.NOT_FOUND, lambda: csi.node_expand(bad_id, target, GiB))
    expect_code(Code.NOT_FOUND, lambda: csi.snapshot(bad_id, "hostile-snap"))
    expect_code(Code.NOT_FOUND, lambda: csi.create("hostile-clone", source=_vol(bad_id)))
    csi.delete(bad_id)  # not an ID of ours: DeleteVolume succeeds and does nothing
    csi.delete_snapshot(bad_id)
    assert not csi.list_snapshots(snapshot_id=bad_id).entries
    assert not csi.list_snapshots(source_volume_id=bad_id).entries
    assert pool_state(csi, csi_pool, work) == before
    assert (target / "precious").read_text() == "data"
    assert not other.exists()


def _vol(volume_id: str) -> csi_pb2.VolumeContentSource:
    source = csi_pb2.VolumeContentSource
    return source(volume=source.VolumeSource(volume_id=volume_id))


HOSTILE_PATHS = [
    "relative/target",
    "./target",
    "/tmp/../etc",
    "/tmp/x/../../etc/passwd",
    "/tmp/with\0nul",
    "/tmp/with\nnewline",
    "/" + "p" * 5000,
]


@pytest.mark.parametrize("bad_path", HOSTILE_PATHS, ids=range(len(HOSTILE_PATHS)))
def test_hostile_paths_are_invalid_argument(
    csi: Csi, csi_pool: Path, work: Path, victim: tuple[str, Path, Path], bad_path: str
) -> None:
    volume, staging, _ = victim
    before = pool_state(csi, csi_pool, work)
    node = csi.node

    def publish(**fields: str) -> None:
        request = csi_pb2.NodePublishVolumeRequest(
            volume_id=volume, volume_capability=mount_cap(), **fields
        )
        node.NodePublishVolume(request, timeout=RPC_TIMEOUT)

    expect_code(
        Code.INVALID_ARGUMENT,
        lambda: publish(staging_target_path=str(staging), target_path=bad_path),
    )
    expect_code(
        Code.INVALID_ARGUMENT,
        lambda: publish(staging_target_path=bad_path, target_path=str(work / "t")),
    )
    expect_code(Code.INVALID_ARGUMENT, lambda: csi.stage(volume, Path(bad_path)))
    expect_code(Code.INVALID_ARGUMENT, lambda: csi.unpublish(volume, Path(bad_path)))
    expect_code(Code.INVALID_ARGUMENT, lambda: csi.unstage(volume, Path(bad_path)))
    expect_code(Code.INVALID_ARGUMENT, lambda: csi.node_expand(volume, Path(bad_path), GiB))
    assert pool_state(csi, csi_pool, work) == before


@pytest.mark.parametrize("existing", ["/etc", "/", "/etc/hostname", "/proc/self"])
def test_publish_never_mounts_over_what_is_not_its_own(
    csi: Csi, csi_pool: Path, work: Path, victim: tuple[str, Path, Path], existing: str
) -> None:
    """An existing, non-empty target or staging path is never mounted over (or removed)."""
    volume, staging, _ = victim
    before = pool_state(csi, csi_pool, work)
    refused = {Code.FAILED_PRECONDITION, Code.ALREADY_EXISTS}  # the latter: a mount point
    error = rpc_error(lambda: csi.publish(volume, staging, Path(existing)))
    if staging.is_relative_to(existing):  # "/" holds the staging path: INVALID_ARGUMENT
        assert error.code() is Code.INVALID_ARGUMENT, error.details()
    else:
        assert error.code() in refused, error.details()
    raw = csi.create("pvc-hostile-raw", 16 * MiB, cap=block_cap()).volume_id
    error = rpc_error(lambda: csi.stage(raw, Path(existing), block_cap()))
    assert error.code() in refused, error.details()
    error = rpc_error(lambda: csi.stage(volume, Path(existing)))
    assert error.code() in refused, error.details()
    csi.delete(raw)
    csi.unpublish(volume, Path(existing))  # not published there: OK, and nothing removed
    assert Path(existing).exists()
    assert pool_state(csi, csi_pool, work) == before


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "a/b",
        ".",
        "..",
        "-rf",
        "x\0y",
        "💥",
        " ",
        "a" * 128,
        "CON",
        "pvc--" + "f" * 32,
    ],
)
def test_any_csi_name_up_to_128_bytes_is_safe(csi: Csi, csi_pool: Path, name: str) -> None:
    volume = csi.create(name, 16 * MiB)
    ref = parse_id(volume.volume_id, IdKind.VOLUME)
    assert ref is not None
    assert validate_name("volume", ref.name) == ref.name
    assert csi.create(name, 16 * MiB).volume_id == volume.volume_id
    assert all(p.parent == csi_pool / "volumes" for p in (csi_pool / "volumes").glob("*"))
    csi.delete(volume.volume_id)


@pytest.mark.parametrize(
    ("size", "limit", "code"),
    [
        (2**63 - 1, 0, Code.OUT_OF_RANGE),
        (0, 2**63 - 1, None),
        (-(2**63), 0, Code.INVALID_ARGUMENT),
        (GiB, -1, Code.INVALID_ARGUMENT),
        (1 << 47, 0, Code.RESOURCE_EXHAUSTED),
    ],
)
def test_huge_and_negative_sizes(
    csi: Csi, state: Callable[[], dict[str, Any]], size: int, limit: int, code: Code | None
) -> None:
    before = state()
    name = f"pvc-size-{abs(size)}-{abs(limit)}"
    if code is None:
        assert csi.create(name, size, limit=limit).capacity_bytes == GiB  # the default size
        csi.delete(csi.create(name, size, limit=limit).volume_id)
    else:
        expect_code(code, lambda: csi.create(name, size, limit=limit))
    assert state() == before


def test_secrets_never_reach_logs_or_errors(csi: Csi, driver: DriverProcess) -> None:
    secret = "hunter2-very-secret"
    request = csi_pb2.CreateVolumeRequest(
        name="pvc-secret",
        volume_capabilities=[mount_cap()],
        parameters={"fsType": secret},  # an unsupported filesystem named after a secret...
        secrets={"token": secret},  # ...that the request also carries as a secret
    )
    message = expect_code(
        Code.INVALID_ARGUMENT,
        lambda: csi.controller.CreateVolume(request, timeout=RPC_TIMEOUT),
    )
    assert secret not in message
    assert secret not in driver.log.read_text()


# --- SIGTERM during a slow call ---------------------------------------------------------------


def test_sigterm_lets_a_slow_call_finish_and_removes_the_socket(fresh_pool: Path) -> None:
    """The test holds the volume's pool lock (a flock, as a concurrent `amber` CLI would), so
    CreateVolume waits inside the driver; SIGTERM stops new calls, the call finishes once the
    lock is free, and the driver exits cleanly."""
    process = start_driver(fresh_pool)
    try:
        channel = grpc.insecure_channel(process.endpoint)
        controller = csi_pb2_grpc.ControllerStub(channel)
        identity = csi_pb2_grpc.IdentityStub(channel)
        locks = LockTable(fresh_pool / "locks")
        with locks.hold("volume:pvc-slow"):
            pending = controller.CreateVolume.future(
                csi_pb2.CreateVolumeRequest(
                    name="pvc-slow",
                    volume_capabilities=[mount_cap()],
                    capacity_range=csi_pb2.CapacityRange(required_bytes=16 * MiB),
                ),
                timeout=60,
            )
            # Same connection, in order: once this answers, the server holds the call above.
            identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=RPC_TIMEOUT)
            assert not pending.done()
            process.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: _refused(process), 10, "new calls to be refused")
            assert not pending.done()
            assert process.proc.poll() is None
        volume = pending.result(timeout=30).volume
        assert volume.volume_id == f"amber:v1:vol:{NODE}:pvc-slow"
        channel.close()
        assert process.proc.wait(timeout=30) == 0
        assert not process.socket.exists()
        lines = [e for e in process.rpc_lines() if e.get("name") == "pvc-slow"]
        assert [e["code"] for e in lines] == ["OK"]
    finally:
        process.cleanup()


def _refused(process: DriverProcess) -> bool:
    channel = grpc.insecure_channel(process.endpoint)
    try:
        csi_pb2_grpc.IdentityStub(channel).GetPluginInfo(
            csi_pb2.GetPluginInfoRequest(), timeout=1.0
        )
    except grpc.RpcError as e:
        return bool(e.code() is Code.UNAVAILABLE)
    finally:
        channel.close()
    return False


def test_bad_node_ids_are_refused_at_start(fresh_pool: Path) -> None:
    for bad in ("", "node/../x", "a:b", "n" * 300):
        with pytest.raises(InvalidArgument):
            validate_node_id(bad)
    with pytest.raises(AssertionError, match="exited 2"):
        start_driver(fresh_pool, node_id="bad/node")


# --- ID and name formats (properties) ---------------------------------------------------------

node_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}", fullmatch=True)
csi_names = st.text(min_size=1, max_size=128).filter(lambda s: len(s.encode()) <= 128)


@settings(max_examples=300, deadline=None)
@given(node=node_ids, name=csi_names)
def test_every_name_maps_to_a_valid_pool_name_and_a_short_id(node: str, name: str) -> None:
    segment = node_segment(node)
    for kind in (IdKind.VOLUME, IdKind.SNAPSHOT):
        mapped = pool_name(name, name_budget(kind, segment))
        assert validate_name("volume", mapped) == mapped
        assert mapped == pool_name(name, name_budget(kind, segment))  # stable
        object_id = format_id(kind, segment, mapped)
        assert len(object_id.encode()) <= 128
        assert parse_id(object_id, kind) is not None
        assert parse_id(object_id, kind).name == mapped  # type: ignore[union-attr]
        other = IdKind.SNAPSHOT if kind is IdKind.VOLUME else IdKind.VOLUME
        assert parse_id(object_id, other) is None


@settings(max_examples=300, deadline=None)
@given(a=csi_names, b=csi_names)
def test_different_names_never_share_a_pool_name(a: str, b: str) -> None:
    if a != b:
        assert pool_name(a, 50) != pool_name(b, 50)


def test_long_node_ids_are_shortened_with_a_hash() -> None:
    long_a, long_b = "n" * 100 + "a", "n" * 100 + "b"
    assert node_segment("node-a") == "node-a"
    assert len(node_segment(long_a)) == 64
    assert node_segment(long_a) != node_segment(long_b)
    assert "~" in node_segment(long_a)


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(st.text(min_size=1, max_size=40), unique=True, max_size=30),
    size=st.integers(1, 7),
)
def test_pages_cover_everything_once(keys: list[str], size: int) -> None:
    seen: list[str] = []
    token = ""
    while True:
        chunk, token = page(keys, lambda k: k, token, size)
        assert len(chunk) <= size
        seen += chunk
        if not token:
            break
    assert seen == sorted(keys)


@pytest.mark.parametrize("token", ["invalid-token", "abc.", ".abc", "YWJj.deadbeef", "💥.x"])
def test_forged_page_tokens_are_refused(token: str) -> None:
    with pytest.raises(BadToken):
        page(["a", "b"], lambda k: k, token, 1)
    assert read_token(make_token("pvc-1")) == "pvc-1"
