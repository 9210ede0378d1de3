"""The dashboard's security over plain HTTP: CSRF and origin checks on every POST, the token
for non-loopback binds and logins, and no secret on any page."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.runner import amber
from tests.web.conftest import PASSWORD, Dashboard, start_dashboard, stop

TOKEN = "s3cr3t-dashboard-token-0123456789"
PAGES = ("/", "/volumes", "/volumes/db", "/backups", "/targets", "/jobs", "/operations")
API = (
    "/api/overview",
    "/api/volumes",
    "/api/volumes/db",
    "/api/targets",
    "/api/jobs",
    "/api/operations",
    "/api/targets/t/backups",
)


def _csrf(dashboard: Dashboard) -> str:
    status, headers, _ = dashboard.request("GET", "/volumes")
    assert status == 200
    found = re.search(r"amber_csrf=([^;]+);", headers["set-cookie"])
    assert found, headers["set-cookie"]
    return found.group(1)


def _post(dashboard: Dashboard, body: str, **headers: str) -> tuple[int, str]:
    status, _, text = dashboard.request("POST", "/actions/snapshot", body, headers)
    return status, text


def test_a_post_needs_the_csrf_token_and_this_origin(dashboard: Dashboard) -> None:
    dashboard.amber_json("volume", "create", "db", "--size", "16Mi", "--block")
    origin = f"http://{dashboard.netloc}"
    csrf = _csrf(dashboard)
    cookie = f"amber_csrf={csrf}"
    body = "volume=db&name=s1"
    assert _post(dashboard, body, Origin=origin)[0] == 403  # no token at all
    assert _post(dashboard, body, Origin=origin, Cookie=cookie)[0] == 403  # cookie alone
    wrong = {"Origin": origin, "Cookie": cookie, "X-CSRF-Token": "x" + csrf}
    assert _post(dashboard, body, **wrong)[0] == 403
    for evil in ("http://evil.example", f"https://{dashboard.netloc}", "null"):
        status, text = _post(dashboard, body, Origin=evil, Cookie=cookie, **{"X-CSRF-Token": csrf})
        assert (status, "cross-origin" in text) == (403, True), evil
    assert _post(dashboard, body, Cookie=cookie, **{"X-CSRF-Token": csrf})[0] == 403  # no Origin
    assert dashboard.amber_json("snapshot", "list") == []
    status, text = _post(dashboard, f"{body}&csrf={csrf}", Origin=origin, Cookie=cookie)
    assert status == 200, text
    assert [s["name"] for s in dashboard.amber_json("snapshot", "list")] == ["s1"]


def test_a_destroying_action_needs_confirmation(dashboard: Dashboard) -> None:
    dashboard.amber_json("volume", "create", "db", "--size", "16Mi", "--block")
    csrf = _csrf(dashboard)
    headers = {
        "Origin": f"http://{dashboard.netloc}",
        "Cookie": f"amber_csrf={csrf}",
        "X-CSRF-Token": csrf,
    }
    status, _, text = dashboard.request("POST", "/actions/delete-volume", "volume=db", headers)
    assert status == 400
    assert "confirm" in text
    assert [v["name"] for v in dashboard.amber_json("volume", "list")] == ["db"]
    status, _, _ = dashboard.request(
        "POST", "/actions/delete-volume", "volume=db&confirm=yes", headers
    )
    assert status == 200
    assert dashboard.amber_json("volume", "list") == []


def test_another_host_name_is_refused_without_a_token(dashboard: Dashboard) -> None:
    """A page of another site that rebinds its name to 127.0.0.1 sends its own Host."""
    status, _, _ = dashboard.request("GET", "/api/volumes", headers={"Host": "evil.example"})
    assert status == 400
    assert dashboard.request("GET", "/api/volumes", headers={"Host": "localhost:1"})[0] == 200


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0", "192.0.2.1:8080", "example.com:80"])
def test_a_non_loopback_bind_without_a_token_refuses_to_start(pool_dir: Path, address: str) -> None:
    done = amber(pool_dir, "dashboard", "--address", address, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "reachable from other machines: give --token-file" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("8080", "expected HOST:PORT"),
        ("127.0.0.1:99999", "port 0-65535"),
        ("::1:8080", "IPv6 host in []"),
    ],
)
def test_a_bad_address_is_one_line(pool_dir: Path, address: str, message: str) -> None:
    done = amber(pool_dir, "dashboard", "--address", address, timeout=60)
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert message in done.stderr


def test_a_short_token_is_refused(pool_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("short\n")
    done = amber(pool_dir, "dashboard", "--token-file", str(tmp_path / "token"), timeout=60)
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert "at least 16 characters" in done.stderr


@pytest.fixture
def guarded(pool_dir: Path, targets: Path, tmp_path: Path) -> Iterator[Dashboard]:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    running = start_dashboard(pool_dir, targets, "--token-file", str(token))
    yield running
    stop(running)


def test_with_a_token_nothing_is_served_to_strangers(guarded: Dashboard) -> None:
    guarded.amber_json("volume", "create", "db", "--size", "16Mi", "--block")
    for path in API:
        status, headers, _ = guarded.request("GET", path)
        assert (status, headers.get("www-authenticate")) == (401, "Bearer"), path
    for path in PAGES:
        status, headers, _ = guarded.request("GET", path)
        assert status == 303, path
        assert headers["location"].startswith("/login?next="), path
    status, _, _ = guarded.request("GET", "/api/volumes", headers={"Authorization": "Bearer no"})
    assert status == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    status, _, text = guarded.request("GET", "/api/volumes", headers=bearer)
    assert status == 200
    assert '"name":"db"' in text
    # A bearer client (a script) needs no CSRF token: no browser sends that header for a page.
    status, _, text = guarded.request("POST", "/actions/snapshot", "volume=db&name=s", bearer)
    assert status == 200, text
    # Without the token, a POST is refused before anything runs.
    assert guarded.request("POST", "/actions/snapshot", "volume=db&name=s2")[0] == 401
    assert [s["name"] for s in guarded.amber_json("snapshot", "list")] == ["s"]


def test_the_login_page_sets_a_strict_httponly_cookie(guarded: Dashboard) -> None:
    status, headers, _ = guarded.request("GET", "/login?next=/volumes")
    assert status == 200
    csrf = re.search(r"amber_csrf=([^;]+);", headers["set-cookie"])
    assert csrf
    form = {"Origin": f"http://{guarded.netloc}", "Cookie": f"amber_csrf={csrf.group(1)}"}
    body = f"csrf={csrf.group(1)}&next=/volumes&token="
    status, headers, _ = guarded.request("POST", "/login", body + "wrong-token-0123456789", form)
    assert status == 401
    assert "amber_session" not in headers["set-cookie"]
    status, headers, _ = guarded.request("POST", "/login", body + TOKEN, form)
    assert (status, headers["location"]) == (303, "/volumes")
    session = headers["set-cookie"]
    assert "HttpOnly" in session
    assert "SameSite=strict" in session or "SameSite=Strict" in session
    assert TOKEN not in session  # the cookie is derived from the token, never the token
    value = re.search(r"amber_session=([^;]+);", session)
    assert value
    status, _, text = guarded.request(
        "GET", "/volumes", headers={"Cookie": f"amber_session={value.group(1)}"}
    )
    assert status == 200
    assert TOKEN not in text
    # Login itself is protected from cross-site forms.
    evil = {**form, "Origin": "http://evil.example"}
    assert guarded.request("POST", "/login", body + TOKEN, evil)[0] == 403


def test_no_page_shows_a_secret(pool_dir: Path, targets: Path, tmp_path: Path) -> None:
    """An S3 target with an access key and a secret key beside the file target: no page or
    API answer contains the secret key, the access key id, or a password."""
    secret_key, access_key = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY", "AKIAEXAMPLEACCESS42"
    (tmp_path / "s3-secret").write_text(secret_key + "\n")
    done = amber(
        pool_dir,
        "target",
        "--config",
        str(targets),
        "add",
        "s3",
        "s3://bucket/prefix",
        "--endpoint",
        "http://127.0.0.1:9",
        "--access-key",
        access_key,
        "--secret-key-file",
        str(tmp_path / "s3-secret"),
        "--password-file",
        str(tmp_path / "password"),
        "--no-check",
    )
    assert done.returncode == 0, done.stderr
    amber(pool_dir, "volume", "create", "db", "--size", "16Mi", "--block")
    running = start_dashboard(pool_dir, targets)  # pages wait 5 s at most for a target
    try:
        paths = ("/targets", *PAGES, *API, "/metrics")
        answers = [running.request("GET", path) for path in paths]
    finally:
        stop(running)
    assert [status for status, _, _ in answers] == [200] * len(answers)
    volume_page = answers[1 + PAGES.index("/volumes/db")][2]
    assert "target s3: target s3 is unreachable" in volume_page  # known down: not waited for
    everything = "\n".join(text for _, _, text in answers)
    assert "s3://bucket/prefix" in everything  # the S3 target is shown...
    for secret in (secret_key, access_key, PASSWORD):
        assert secret not in everything  # ...without its secrets


def test_dashboard_help_imports_no_web_stack() -> None:
    probe = (
        "import sys; sys.argv = ['amber', 'dashboard', '--help']\n"
        "from amber.cli.main import run\n"
        "try:\n    run()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'uvicorn', 'starlette', 'jinja2')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip().endswith("[]"), done.stdout


def test_an_address_in_use_is_one_line(pool_dir: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = amber(pool_dir, "dashboard", "--address", f"127.0.0.1:{port}", timeout=60)
    assert done.returncode != 0
    assert done.stderr == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
