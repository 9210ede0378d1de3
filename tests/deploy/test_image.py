"""The container image recipe: what can be checked without a container runtime.

The Dockerfile is linted for what matters (a pinned Debian 12 slim base, no `latest`, a
non-root USER, an ENTRYPOINT, its install script present), and the install script itself runs
here into a scratch prefix: a non-editable install whose `amber` works.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, REPO

IMAGE = DEPLOY / "image"
DOCKERFILE = IMAGE / "Dockerfile"
SCRIPT = IMAGE / "install.sh"
TOOLS = ("xfsprogs", "e2fsprogs", "util-linux", "mount", "btrfs-progs", "procps")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def lint(text: str) -> list[str]:
    """Problems of a Dockerfile (empty when it passes)."""
    steps = instructions(text)
    problems = []
    bases = [args for word, args in steps if word == "FROM"]
    if len(bases) != 1:
        problems.append(f"expected one FROM, found {len(bases)}")
    for base in bases:
        image = base.split()[0]
        pinned = re.fullmatch(r"debian:12\.\d+-slim(@sha256:[0-9a-f]{64})?", image) or re.fullmatch(
            r"debian@sha256:[0-9a-f]{64}", image
        )
        if not pinned:
            problems.append(f"base {image!r} is not Debian 12 slim pinned to a point release")
    if re.search(r":latest\b", text):
        problems.append("uses a `latest` tag")
    users = [args for word, args in steps if word == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("no final non-root USER")
    entry = [args for word, args in steps if word == "ENTRYPOINT"]
    if not entry or not entry[-1].startswith("["):
        problems.append("no ENTRYPOINT in exec form")
    runs = " ".join(args for word, args in steps if word == "RUN")
    if "install.sh" not in runs:
        problems.append("the install steps do not run deploy/image/install.sh")
    if re.search(r"pip[0-9.]* install[^&;]*\s(-e|--editable)\b", runs):
        problems.append("an editable install")
    copied = [args.split()[:-1] for word, args in steps if word in ("COPY", "ADD")]
    problems.extend(
        f"copies {source}, which is not in the repository"
        for sources in copied
        for source in sources
        if not source.startswith("--") and not (REPO / source).exists()
    )
    return problems


def test_the_dockerfile_passes_the_lint() -> None:
    assert lint(DOCKERFILE.read_text()) == []
    assert os.access(SCRIPT, os.X_OK)


def test_the_lint_catches_mistakes() -> None:
    bad = "FROM debian:latest\nRUN pip install -e .\nCOPY nothing-here /x\n"
    problems = lint(bad)
    assert any("not Debian 12 slim" in p for p in problems)
    assert any("latest" in p for p in problems)
    assert any("USER" in p for p in problems)
    assert any("ENTRYPOINT" in p for p in problems)
    assert any("install.sh" in p for p in problems)
    assert any("nothing-here" in p for p in problems)
    assert lint(DOCKERFILE.read_text().replace("USER 65532:65532", "USER root"))


def test_the_script_installs_the_tools_amber_calls() -> None:
    text = SCRIPT.read_text()
    for tool in TOOLS:
        assert re.search(rf"\s{re.escape(tool)}(\s|$)", text), tool
    assert "--no-install-recommends" in text
    assert not re.search(r"install\s+(-e|--editable)\b", text)


@pytest.mark.slow
def test_the_script_makes_a_working_non_editable_install(tmp_path: Path) -> None:
    prefix, bin_dir = tmp_path / "prefix", tmp_path / "bin"
    # A clean environment: nothing may lead Python back to the source tree.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    done = subprocess.run(
        ["bash", str(SCRIPT), "--prefix", str(prefix), "--link", str(bin_dir), str(REPO)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    helped = subprocess.run(
        [str(bin_dir / "amber"), "--help"], capture_output=True, text=True, check=False, env=env
    )
    assert helped.returncode == 0, helped.stderr
    assert "pool" in helped.stdout
    where = subprocess.run(
        [
            str(prefix / "bin" / "python"),
            "-c",
            "import amber, json; print(json.dumps(amber.__file__))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    module = Path(json.loads(where.stdout))
    assert module.is_relative_to(prefix)  # installed, not a link back to the source tree
    # The dashboard's templates and static files are package data of the wheel.
    for data in ("templates/base.html", "templates/volume.html", "static/app.js", "static/app.css"):
        assert (module.parent / "web" / data).is_file(), data
    assert not (REPO / "build").exists()


def test_the_script_refuses_a_wrong_source(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT), "--prefix", str(tmp_path / "p"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "not Amber's source tree" in done.stderr
