"""The suite's own hygiene: a session that ends, even by SIGTERM, leaves no mount or loop
device of its temporary directories behind, and the end-of-session check can see one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import leftovers_under, make_xfs, release_xfs, teardown_mounts_under
from tests.csi.plumbing import wait_for

REPO = Path(__file__).resolve().parents[2]

INNER = '''
import signal
import subprocess
from pathlib import Path


def test_waits_for_the_signal(xfs_root, tmp_path_factory):
    """A volume image on the session's XFS, mounted outside it, and a SIGTERM to end."""
    staged = tmp_path_factory.mktemp("staged")
    (staged / "mnt").mkdir()
    image = xfs_root / "volume.img"
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(staged / "mnt")], check=True)
    Path({ready!r}).touch()
    signal.pause()
'''


def test_leftovers_names_a_mount_and_its_loop_device_until_released(tmp_path: Path) -> None:
    image, mnt = make_xfs(tmp_path, "300M")
    left = leftovers_under(tmp_path)
    assert any(line.startswith(f"mount {mnt} ") for line in left), left
    assert any(line.endswith(f"-> {image}") for line in left), left
    release_xfs(image, mnt)
    assert leftovers_under(tmp_path) == []
    assert not image.exists()


@pytest.mark.parametrize("workers", [[], ["-n", "1"]], ids=["serial", "xdist"])
def test_a_terminated_session_releases_its_mounts_and_loop_devices(
    tmp_path: Path, workers: list[str]
) -> None:
    """SIGTERM to pytest (to the xdist controller alone, in the second case) ends the session
    with every fixture's teardown: nothing of it stays mounted or attached."""
    ready = tmp_path / "ready"
    (tmp_path / "test_inner.py").write_text(INNER.format(ready=str(ready)))
    base = tmp_path / "inner"
    options = ["-q", "-p", "no:cacheprovider", f"--basetemp={base}", "--rootdir", str(tmp_path)]
    options += workers
    session = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            *options,
            str(tmp_path / "test_inner.py"),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: ready.exists() or session.poll() is not None, 120, "the inner test")
        assert session.poll() is None, session.communicate()[0].decode()
        assert len(leftovers_under(base)) == 4  # the xfs and the staged ext4: mounts and loops
        session.send_signal(signal.SIGTERM)
        output = session.communicate(timeout=120)[0].decode()
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
        leftover = leftovers_under(base)
        teardown_mounts_under(base)  # what the inner session left, when this test fails
    assert leftover == [], output
    assert "left mounts or loop devices behind" not in output, output
    assert session.returncode == 2, output  # interrupted, like Ctrl-C
