"""The dashboard in a real headless Chromium: every page loads without a console error, and
every action changes the real pool (checked with the `amber` command, not the page)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from tests.cli.runner import amber
from tests.web.conftest import (
    Dashboard,
    backup_list,
    read_start,
    start_dashboard,
    stop,
    write_pattern,
)
from tests.web.pages import Browser

MiB = 1 << 20
PAGES = {
    "/": "Pool",
    "/volumes": "Volumes",
    "/volumes/db": "Volume db",
    "/backups": "Backups",
    "/targets": "Targets",
    "/jobs": "Recurring jobs",
    "/operations": "Operations",
}


@pytest.fixture
def page(browser: Any, dashboard: Dashboard) -> Browser:
    return Browser(browser, dashboard)


def _volume_with_data(dashboard: Dashboard, name: str = "db", data: int = 4 * MiB) -> bytes:
    dashboard.amber_json("volume", "create", name, "--size", "64Mi", "--block")
    return write_pattern(dashboard.pool, name, data)


def _snapshots(dashboard: Dashboard) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in dashboard.amber_json("snapshot", "list")}


def _volumes(dashboard: Dashboard) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard.amber_json("volume", "list")}


def test_every_page_loads_and_shows_the_pool(page: Browser, dashboard: Dashboard) -> None:
    _volume_with_data(dashboard)
    dashboard.amber_json("snapshot", "create", "db", "before")
    made = dashboard.amber_json("backup", "create", "before", "--target", "t")
    for path, heading in PAGES.items():
        page.open(path)
        assert page.text("h1").startswith(heading), path
    page.open("/volumes")
    row = page.text('#volumes tr[data-volume="db"]')
    assert "64.0 MiB" in row
    assert "1" in row.split()  # one snapshot
    page.open("/volumes/db")
    assert page.driver.find_elements(By.CSS_SELECTOR, '#timeline tr.snapshot[data-name="before"]')
    assert page.driver.find_elements(
        By.CSS_SELECTOR, f'#timeline tr.backup[data-name="{made["backup_id"]}"]'
    )
    page.open("/backups")
    assert made["backup_id"][:12] in page.text('section[data-target="t"]')
    assert "dedup" in page.text('section[data-target="t"] .dedup')
    page.open("/targets")
    assert "reachable, writable" in page.text('#targets tr[data-target="t"]')
    page.open("/jobs")
    assert "No recurring jobs configured" in page.text("main")


def test_snapshot_now_makes_a_snapshot_in_the_pool(page: Browser, dashboard: Dashboard) -> None:
    _volume_with_data(dashboard)
    page.open("/volumes")
    message = page.act('#volumes tr[data-volume="db"]', "snapshot")
    assert message.startswith("snapshot db-"), message
    taken = [s for s in _snapshots(dashboard).values() if s["volume_name"] == "db"]
    assert len(taken) == 1
    assert taken[0]["name"] in message
    assert page.driver.current_url.endswith("/volumes/db")  # the volume's timeline shows it
    assert page.driver.find_elements(By.CSS_SELECTOR, f'tr[data-name="{taken[0]["name"]}"]')


def test_restore_a_snapshot_from_the_page_gives_its_bytes(
    page: Browser, dashboard: Dashboard
) -> None:
    data = _volume_with_data(dashboard)
    page.open("/volumes/db")
    page.act(".toolbar", "snapshot", {"name": "snap1"})
    write_pattern(dashboard.pool, "db", 4 * MiB)  # the volume moves on
    page.open("/volumes/db")
    message = page.act(
        '#timeline tr[data-name="snap1"]', "restore-snapshot", {"new": "back", "size": "128Mi"}
    )
    assert message == "volume back restored from snapshot snap1"
    assert _volumes(dashboard)["back"]["size"] == 128 * MiB
    assert read_start(dashboard.pool, "back", len(data)) == data


def test_clone_and_expand_from_the_page(page: Browser, dashboard: Dashboard) -> None:
    data = _volume_with_data(dashboard)
    page.open("/volumes/db")
    assert page.act(".toolbar", "clone", {"new": "copy"}) == "volume copy cloned from db"
    assert read_start(dashboard.pool, "copy", len(data)) == data
    page.open("/volumes/db")
    assert page.act(".toolbar", "expand", {"size": "96Mi"}) == "volume db is now 96.0 MiB"
    assert _volumes(dashboard)["db"]["size"] == 96 * MiB


def test_delete_asks_first_and_then_deletes(page: Browser, dashboard: Dashboard) -> None:
    _volume_with_data(dashboard)
    dashboard.amber_json("snapshot", "create", "db", "old")
    page.open("/volumes/db")
    assert page.act('#timeline tr[data-name="old"]', "delete-snapshot", confirm=False) == ""
    assert "old" in _snapshots(dashboard)  # cancelled: still there
    assert page.act('#timeline tr[data-name="old"]', "delete-snapshot") == "snapshot old deleted"
    assert "old" not in _snapshots(dashboard)
    page.open("/volumes/db")
    assert page.act(".toolbar", "delete-volume", confirm=False) == ""
    assert "db" in _volumes(dashboard)
    message = page.act(".toolbar", "delete-volume")
    assert message == "volume db deleted (its snapshots and backups stay)"
    assert "db" not in _volumes(dashboard)
    assert page.driver.current_url.endswith("/volumes")


def test_bad_input_shows_one_clear_message(page: Browser, dashboard: Dashboard) -> None:
    _volume_with_data(dashboard)
    page.open("/volumes/db")
    message = page.act(".toolbar", "expand", {"size": "12 parsecs"})
    assert page.flash_is_error()
    assert message.startswith("new size: invalid size '12 parsecs'"), message
    assert "\n" not in message
    message = page.act(".toolbar", "snapshot", {"name": "no spaces please"})
    assert message.startswith("invalid snapshot name 'no spaces please'"), message
    message = page.act(".toolbar", "expand", {"size": "32Mi"})
    assert page.flash_is_error()
    assert "32.0 MiB" in message  # shrinking is refused with the pool's own message
    assert _volumes(dashboard)["db"]["size"] == 64 * MiB
    assert dashboard.amber_json("snapshot", "list") == []


def test_backup_shows_live_progress_then_restores(
    browser: Any, pool_dir: Path, targets: Path, tmp_path: Path
) -> None:
    """The backup pauses at its first staged pack (a FIFO, not a sleep) while the page shows
    it running with its progress; released, it is listed by `amber backup list`, and a restore
    of it from the page has the volume's bytes."""
    fifo = tmp_path / "release"
    os.mkfifo(fifo)
    dashboard = start_dashboard(
        pool_dir, targets, env={"AMBER_TEST_PAUSE_AT": f"backup.pack-staged:{fifo}"}
    )
    try:
        page = Browser(browser, dashboard)
        data = _volume_with_data(dashboard, data=48 * MiB)
        page.open("/volumes/db")
        message = page.act(".toolbar", "backup", {"target": "t"})
        assert message.startswith("started: back up db-backup-"), message
        page.wait().until(
            lambda d: d.find_element(By.CSS_SELECTOR, "#running-list li").is_displayed()
        )
        item = page.driver.find_element(By.CSS_SELECTOR, "#running-list li")
        assert "to t" in item.text
        page.wait().until(
            lambda d: (
                float(
                    d.find_element(By.CSS_SELECTOR, "#running-list progress").get_attribute("value")
                    or 0
                )
                > 0
            )
        )
        page.open("/operations")
        assert page.text("#operations tr.running .state") == "running"
        assert backup_list(dashboard) == []
        with open(fifo, "wb"):
            pass  # release the paused backup
        page.wait().until(lambda d: "succeeded" in page.text("#operations tbody tr"))
        listed = backup_list(dashboard)
        assert len(listed) == 1
        assert listed[0]["volume"] == "db"
        page.open("/volumes/db")
        backup_id = listed[0]["backup_id"]
        message = page.act(
            f'#timeline tr[data-name="{backup_id}"]', "restore-backup", {"new": "from-backup"}
        )
        assert message.startswith("started: restore backup"), message
        page.wait().until(lambda d: "restored from backup" in page.text("#flash"))
        assert read_start(dashboard.pool, "from-backup", len(data)) == data
    finally:
        stop(dashboard)
    assert amber(pool_dir, "volume", "show", "from-backup").returncode == 0


def test_delete_a_backup_follows_the_operations_rule(page: Browser, dashboard: Dashboard) -> None:
    """The page's delete goes through amber.ops: refused while a restore of the backup runs
    elsewhere (a live restore lock of another node), done once that restore has finished."""
    from amber.backup.locks import LockKind, LockPurpose
    from amber.backup.targets import TargetConfig, open_target_repository

    _volume_with_data(dashboard)
    dashboard.amber_json("snapshot", "create", "db", "s1")
    backup_id = dashboard.amber_json("backup", "create", "s1", "--target", "t")["backup_id"]
    repo = open_target_repository(TargetConfig(dashboard.config).get("t"))
    restore = repo.locks.acquire(
        "node-b pid 4242: restore into pvc-9",
        LockKind.SHARED,
        reader=True,
        purpose=LockPurpose.restore(backup_id),
    )
    row = f'section[data-target="t"] tr[data-backup="{backup_id}"]'
    page.open("/backups")
    message = page.act(row, "delete-backup")
    assert page.flash_is_error()
    assert "being restored (node-b pid 4242" in message, message
    assert [b["backup_id"] for b in backup_list(dashboard)] == [backup_id]
    restore.release()
    assert page.act(row, "delete-backup").startswith(f"backup {backup_id} deleted from t")
    assert backup_list(dashboard) == []


def test_with_a_token_the_browser_logs_in_first(
    browser: Any, pool_dir: Path, targets: Path, tmp_path: Path
) -> None:
    token = "a-dashboard-token-for-the-browser-42"
    (tmp_path / "token").write_text(token + "\n")
    dashboard = start_dashboard(pool_dir, targets, "--token-file", str(tmp_path / "token"))
    try:
        page = Browser(browser, dashboard)
        dashboard.amber_json("volume", "create", "db", "--size", "16Mi", "--block")
        page.open("/volumes")
        assert page.driver.current_url.endswith("/login?next=/volumes")
        field = page.driver.find_element(By.NAME, "token")
        field.send_keys("not-the-token-at-all-0000")
        field.submit()
        page.wait().until(lambda d: "Wrong token." in d.find_element(By.TAG_NAME, "main").text)
        page.driver.get_log("browser")  # the 401 of the failed login is logged as an error
        page.driver.find_element(By.NAME, "token").send_keys(token)
        page.driver.find_element(By.NAME, "token").submit()
        page.wait().until(lambda d: d.current_url.endswith("/volumes"))
        assert page.driver.find_elements(By.CSS_SELECTOR, '#volumes tr[data-volume="db"]')
        cookies = {c["name"]: c for c in page.driver.get_cookies()}
        assert cookies["amber_session"]["httpOnly"] is True
        assert cookies["amber_session"]["sameSite"] == "Strict"
        assert token not in cookies["amber_session"]["value"]
        assert page.act('#volumes tr[data-volume="db"]', "snapshot").startswith("snapshot db-")
        assert page.console_errors() == []
    finally:
        page.driver.delete_all_cookies()
        stop(dashboard)
