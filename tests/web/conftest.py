"""Fixtures of the dashboard tests: a real `amber dashboard` process on a real XFS pool with a
file target, driven by Debian's headless Chromium through its chromedriver (never a download)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.cli.runner import add_file_target, amber, amber_json

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PASSWORD = "correct horse battery staple"  # what add_file_target writes


@dataclass
class Dashboard:
    """A running `amber dashboard` and the pool and targets file it serves."""

    url: str
    pool: Path
    config: Path
    process: subprocess.Popen[str]
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def netloc(self) -> str:
        return urlsplit(self.url).netloc

    def amber_json(self, *args: str) -> Any:
        """`amber -o json ARGS` on the dashboard's pool (backup commands get its targets)."""
        if args and args[0] in ("backup", "target"):
            args = (args[0], "--config", str(self.config), *args[1:])
        return amber_json(self.pool, *args)

    def request(
        self,
        method: str,
        path: str,
        body: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        """One plain HTTP request (redirects not followed): status, headers, body."""
        conn = http.client.HTTPConnection(self.netloc, timeout=60)
        try:
            sent = {"Host": self.netloc, **(headers or {})}
            if body is not None:
                sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            got = {k.lower(): v for k, v in response.getheaders()}
            set_cookies = [v for k, v in response.getheaders() if k.lower() == "set-cookie"]
            got["set-cookie"] = "\n".join(set_cookies)
            return response.status, got, response.read().decode()
        finally:
            conn.close()


def start_dashboard(
    pool: Path, config: Path, *extra: str, env: dict[str, str] | None = None
) -> Dashboard:
    """Start `amber dashboard` on a free loopback port; returns once it printed its address."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "amber",
            "--pool",
            str(pool),
            "dashboard",
            "--targets",
            str(config),
            "--address",
            "127.0.0.1:0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "Amber dashboard on " not in line:
        process.kill()
        _, err = process.communicate(timeout=30)
        pytest.fail(f"the dashboard did not start: {line}{err}")
    url = line.split("Amber dashboard on ", 1)[1].split()[0]
    return Dashboard(url, pool, config, process)


def stop(dashboard: Dashboard) -> None:
    dashboard.process.terminate()
    try:
        dashboard.process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        dashboard.process.kill()
        dashboard.process.communicate(timeout=30)


@pytest.fixture
def targets(pool_dir: Path, tmp_path: Path) -> Path:
    """An encrypted file target `t` (repository created), as a targets file."""
    return add_file_target(pool_dir, tmp_path)


JOBS = """\
jobs:
  - name: hourly
    task: snapshot
    cron: "0 * * * *"
    retain: 3
    volumes: [db]
"""


@pytest.fixture
def jobs_file(tmp_path: Path) -> Path:
    """A jobs file with one job, `hourly`: a snapshot of volume `db` every hour, keeping 3."""
    path = tmp_path / "jobs.yaml"
    path.write_text(JOBS)
    return path


@pytest.fixture
def dashboard(pool_dir: Path, targets: Path) -> Iterator[Dashboard]:
    running = start_dashboard(pool_dir, targets)
    yield running
    stop(running)


def volume_image(pool: Path, name: str) -> Path:
    return Path(amber_json(pool, "volume", "show", name)["volume"]["image"])


def write_pattern(pool: Path, name: str, size: int) -> bytes:
    """Random bytes at the start of a (block) volume's image; returns them."""
    data = os.urandom(size)
    with open(volume_image(pool, name), "r+b") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return data


def read_start(pool: Path, name: str, size: int) -> bytes:
    with open(volume_image(pool, name), "rb") as f:
        return f.read(size)


def backup_list(dashboard: Dashboard) -> list[dict[str, Any]]:
    done = amber(dashboard.pool, "-o", "json", "backup", "--config", str(dashboard.config), "list")
    assert done.returncode == 0, done.stderr
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's), through /usr/bin/chromedriver: no Selenium Manager."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            "the dashboard tests need Debian's chromium and chromium-driver "
            "(scripts/install.sh --dev installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--disable-gpu",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"amber-chromium-{os.getpid()}"
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
