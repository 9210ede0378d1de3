"""`amber node --dashboard-address`: the dashboard served beside the CSI driver, on its pool,
with the CSI driver's own backup snapshots on the operations page."""

from __future__ import annotations

import http.client
import json
import re
from pathlib import Path

from amber.ops.jobs import JobStore, UploadJob, UploadState
from tests.cli.runner import amber, amber_json
from tests.csi.driver import start_driver


def _get(url: str, path: str) -> tuple[int, str]:
    netloc = url.split("//", 1)[1].rstrip("/")
    conn = http.client.HTTPConnection(netloc, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_the_node_serves_the_dashboard_of_its_pool(pool_dir: Path) -> None:
    amber_json(pool_dir, "volume", "create", "db", "--size", "16Mi", "--block")
    store = JobStore(pool_dir)
    store.put(
        UploadJob(
            name="snapshot-1234",
            target="s3",
            key="k",
            volume="db",
            volume_id="vol-db",
            snapshot="snapshot-1234-local",
            size=16 << 20,
            created=1.0,
            state=UploadState.FAILED,
            attempts=8,
            error="target s3 is unreachable",
        )
    )
    store.close()
    driver = start_driver(pool_dir, extra=["--dashboard-address", "127.0.0.1:0"])
    try:
        found = re.search(r"dashboard on (http://127\.0\.0\.1:\d+/)", driver.log.read_text())
        assert found, driver.log.read_text()
        url = found.group(1)
        status, text = _get(url, "/api/volumes")
        assert status == 200
        assert [v["name"] for v in json.loads(text)] == ["db"]
        status, text = _get(url, "/operations")
        assert status == 200
        assert "snapshot-1234" in text
        assert "target s3 is unreachable" in text
        status, text = _get(url, "/")
        assert "CSI backup snapshot snapshot-1234 of db to s3" in text  # a recent failure
        status, text = _get(url, "/metrics")  # the pool's sources, without --metrics-address
        assert status == 200
        assert 'amber_volume_capacity_bytes{mode="block",volume="db"} 1.6777216e+07' in text
        status, text = _get(url, "/jobs")  # the node's jobs are the operator's resources
        assert "kubectl get recurringjobs" in text
        driver.stop()
    finally:
        driver.cleanup()


def test_a_reachable_node_dashboard_needs_a_token(pool_dir: Path) -> None:
    done = amber(
        pool_dir, "node", "--node-id", "n1", "--dashboard-address", "0.0.0.0:8080", timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "give --dashboard-token-file" in done.stderr


def test_sigterm_stops_the_node_dashboard_and_closes_its_pool(pool_dir: Path) -> None:
    """SIGTERM: the node stops its dashboard thread too, which closes its handle on the pool
    (and its metric sources): the pool's database is left closed, without `-wal` and `-shm`
    files, as `amber dashboard` leaves it."""
    amber_json(pool_dir, "volume", "create", "db", "--size", "16Mi", "--block")
    driver = start_driver(pool_dir, extra=["--dashboard-address", "127.0.0.1:0"])
    try:
        found = re.search(r"dashboard on (http://127\.0\.0\.1:\d+/)", driver.log.read_text())
        assert found, driver.log.read_text()
        for path in ("/api/volumes", "/metrics", "/"):  # the dashboard reads the pool
            assert _get(found.group(1), path)[0] == 200
        assert (pool_dir / "amber.db-wal").exists()
        driver.stop()  # SIGTERM; exit 0
        log = driver.log.read_text()
    finally:
        driver.cleanup()
    assert "Traceback" not in log, log
    left = sorted(p.name for p in pool_dir.glob("*.db-*"))
    assert left == [], f"databases left open: {left}\n{log}"
