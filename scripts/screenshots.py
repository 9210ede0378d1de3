"""Screenshots of every dashboard page for docs/dashboard/*.png, taken in headless Chromium.

Makes a throw-away XFS (reflink) loopback pool with a few volumes, snapshots and backups to a
file target and a jobs file (one run of a job recorded), starts `amber dashboard` on it, holds
one backup running (paused at its first staged pack by the test hook AMBER_TEST_PAUSE_AT,
released at the end) so that live progress shows, and saves one PNG per page. Debian's
chromium and chromium-driver (scripts/install.sh --dev) are used; nothing is downloaded.

Run as root:  .venv/bin/python scripts/screenshots.py [--out docs/dashboard]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from amber.backup.backuper import backup_snapshot
from amber.backup.targets import Target, TargetConfig, open_target_repository
from amber.domain.models import VolumeMode
from amber.pool import Pool, VolumeRequest

MiB = 1 << 20
PAGES = {
    "overview": "/",
    "volumes": "/volumes",
    "volume": "/volumes/postgres-data",
    "backups": "/backups",
    "targets": "/targets",
    "jobs": "/jobs",
    "operations": "/operations",
}


def _write(pool: Pool, volume: str, offset: int, size: int) -> None:
    with open(pool.volumes.get(volume).image, "r+b") as f:
        f.seek(offset)
        f.write(os.urandom(size))


def populate(root: Path, work: Path) -> Path:
    """Volumes, snapshots and backups a small node might have; returns the targets file."""
    pool = Pool.open(root)
    for name, size in (("postgres-data", 512), ("redis", 128), ("minio-0", 1024), ("logs", 256)):
        pool.volumes.create(VolumeRequest(name, size * MiB, VolumeMode.BLOCK, None))
    password = work / "password"
    password.write_text("screenshots password\n")
    (work / "repo").mkdir()
    config = TargetConfig(work / "targets.json")
    config.add(Target("nas", f"file://{work / 'repo'}", password_file=str(password)))
    repo = open_target_repository(config.get("nas"), create=True)
    for k in range(3):
        _write(pool, "postgres-data", k * 8 * MiB, 8 * MiB)
        pool.snapshots.create("postgres-data", f"postgres-data-nightly-{k + 1}")
        backup_snapshot(pool, repo, "nas", f"postgres-data-nightly-{k + 1}")
    _write(pool, "redis", 0, 4 * MiB)
    pool.snapshots.create("redis", "redis-before-upgrade")
    backup_snapshot(pool, repo, "nas", "redis-before-upgrade")
    _write(pool, "minio-0", 0, 96 * MiB)
    pool.close()
    return config.path


JOBS = """\
jobs:
  - {name: hourly, task: snapshot, cron: "0 * * * *", retain: 24, groups: [default]}
  - name: nightly
    task: backup
    cron: "30 2 * * *"
    timezone: Europe/Berlin
    target: nas
    keep: {daily: 7, weekly: 4}
    retainLocal: 2
    volumes: [postgres-data, redis]
  - {name: weekly-prune, task: prune, cron: "0 4 * * 0", target: nas}
"""


def add_jobs(root: Path, work: Path) -> Path:
    """A jobs file (the schedule column and the jobs page), with one run of `hourly` recorded."""
    jobs = work / "jobs.yaml"
    jobs.write_text(JOBS)
    run_now = ["job", "run-now", "hourly", "--file", str(jobs)]
    subprocess.run(
        [sys.executable, "-m", "amber", "--pool", str(root), *run_now],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return jobs


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(
        service=Service(executable_path="/usr/bin/chromedriver"), options=options
    )


def shoot(url: str, out: Path) -> None:
    driver = browser()
    try:
        driver.get(url + "volumes/minio-0")
        driver.find_element(By.CSS_SELECTOR, '.toolbar form[data-action="backup"] button').click()
        WebDriverWait(driver, 60).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "#running-list li").is_displayed()
        )
        for name, path in PAGES.items():
            driver.get(url.rstrip("/") + path)
            WebDriverWait(driver, 60).until(
                lambda d: d.execute_script("return document.readyState") == "complete"
            )
            if name in ("overview", "operations"):
                WebDriverWait(driver, 60).until(
                    lambda d: d.find_element(By.CSS_SELECTOR, "#running-list li").is_displayed()
                )
            driver.save_screenshot(str(out / f"{name}.png"))
            print(f"saved {out / f'{name}.png'}")
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="amber-shots-", dir="/var/tmp"))
    mnt = work / "mnt"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "8G", str(work / "xfs.img")], check=True)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(work / "xfs.img")], check=True)
    subprocess.run(["mount", "-o", "loop", str(work / "xfs.img"), str(mnt)], check=True)
    process = None
    fifo = work / "release"
    os.mkfifo(fifo)
    try:
        root = mnt / "pool"
        Pool.init_dir(root, overprovisioning=4.0)
        targets = populate(root, work)
        jobs = add_jobs(root, work)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "amber",
                "--pool",
                str(root),
                "dashboard",
                "--targets",
                str(targets),
                "--address",
                "127.0.0.1:0",
                "--jobs-file",
                str(jobs),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "AMBER_TEST_PAUSE_AT": f"backup.pack-staged:{fifo}"},
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split("Amber dashboard on ", 1)[1].split()[0]
        shoot(url, args.out)
    finally:
        release = threading.Thread(target=lambda: open(fifo, "wb").close(), daemon=True)
        release.start()
        release.join(5)
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
