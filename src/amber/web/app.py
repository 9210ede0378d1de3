"""The FastAPI application: pages, the JSON API and the actions, over one `WebContext`.

Pages are Jinja2 templates rendered from the view model (`views`); `/api/...` returns the
same records as JSON; `POST /actions/NAME` runs one of `actions` and answers JSON (the page's
script shows the message, or follows the operation's progress). Every domain error becomes
one line and the HTTP status of `errors.http_status`; anything else is logged with a
reference and answered without a traceback.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from amber.domain.errors import AmberError, InvalidArgument, NotFound
from amber.domain.units import format_size
from amber.web import actions, views
from amber.web.config import DashboardConfig
from amber.web.context import WebContext
from amber.web.errors import http_status
from amber.web.operations import Operation
from amber.web.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    Guard,
    new_csrf_token,
    origin_matches,
    same,
)

log = logging.getLogger(__name__)
STATIC = {"app.css": "text/css", "app.js": "text/javascript"}
PUBLIC_PATHS = ("/login", "/static/")
Form = dict[str, str]


def _when(value: float | None) -> str:
    if not value:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value)) + " UTC"


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("amber.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = lambda n: "-" if n is None else format_size(int(n))
    env.filters["when"] = _when
    return env


class Dashboard:
    """The routes of one dashboard (its context, guard and templates)."""

    def __init__(self, config: DashboardConfig, ctx: WebContext) -> None:
        self.config = config
        self.ctx = ctx
        self.guard = Guard(config.token)
        self.templates = _templates()

    # -- rendering ---------------------------------------------------------------------------

    def page(self, request: Request, template: str, status: int = 200, **data: Any) -> Response:
        """A rendered page; it carries (and sets, if new) the CSRF token."""
        csrf = request.cookies.get(CSRF_COOKIE) or new_csrf_token()
        html = self.templates.get_template(template).render(
            csrf=csrf,
            path=request.url.path,
            poll_ms=int(self.config.poll_seconds * 1000),
            login=self.guard.needs_login,
            **data,
        )
        response = HTMLResponse(html, status_code=status)
        if request.cookies.get(CSRF_COOKIE) != csrf:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/")
        return response

    def error_page(self, request: Request, status: int, message: str) -> Response:
        """An error as one line: JSON for the API and actions, a page otherwise."""
        if request.url.path.startswith(("/api/", "/actions/")):
            return JSONResponse({"ok": False, "error": message}, status_code=status)
        return self.page(request, "error.html", status=status, message=message)

    # -- request checks ----------------------------------------------------------------------

    async def gate(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Host and login checks of every request (middleware)."""
        headers = request.headers
        if not self.guard.host_allowed(headers.get("host")):
            return JSONResponse({"ok": False, "error": "invalid Host header"}, status_code=400)
        path = request.url.path
        public = path == "/login" or path.startswith("/static/")
        cookie = request.cookies.get(SESSION_COOKIE)
        if public or self.guard.authenticated(headers.get("authorization"), cookie):
            return await call_next(request)
        if request.method == "GET" and not path.startswith(("/api/", "/metrics")):
            return RedirectResponse(f"/login?next={quote(path)}", status_code=303)
        return JSONResponse(
            {"ok": False, "error": "log in first (Authorization: Bearer TOKEN)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def post_form(self, request: Request) -> Form:
        """The form of a POST, once its CSRF token and origin are checked (403 otherwise)."""
        body = (await request.body()).decode("utf-8", errors="replace")
        form = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
        if self.guard.bearer(request.headers.get("authorization")):
            return form
        headers = request.headers
        if not origin_matches(
            headers.get("origin"), headers.get("referer"), headers.get("host"), request.url.scheme
        ):
            raise Forbidden("cross-origin request refused")
        cookie = request.cookies.get(CSRF_COOKIE)
        given = headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
        if not same(cookie, given):
            raise Forbidden("missing or wrong CSRF token: reload the page")
        return form


class Forbidden(Exception):
    """A POST that failed its CSRF or origin check."""


def _operation(op: Operation) -> dict[str, Any]:
    return {"ok": True, "message": f"started: {op.title}", "operation": views.jsonable(op)}


ACTIONS: dict[str, tuple[Callable[[WebContext, Form], Any], bool]] = {
    "snapshot": (lambda c, f: actions.snapshot_now(c, f.get("volume", ""), f.get("name")), False),
    "backup": (
        lambda c, f: actions.backup_now(
            c, f.get("target", ""), volume=f.get("volume") or None, snapshot=f.get("snapshot")
        ),
        False,
    ),
    "restore-snapshot": (
        lambda c, f: actions.restore_snapshot(
            c, f.get("snapshot", ""), f.get("new", ""), f.get("size")
        ),
        False,
    ),
    "restore-backup": (
        lambda c, f: actions.restore_backup(
            c, f.get("target", ""), f.get("backup", ""), f.get("new", ""), f.get("size")
        ),
        False,
    ),
    "clone": (
        lambda c, f: actions.clone(c, f.get("volume", ""), f.get("new", ""), f.get("size")),
        False,
    ),
    "expand": (lambda c, f: actions.expand(c, f.get("volume", ""), f.get("size", "")), False),
    "delete-volume": (lambda c, f: actions.delete_volume(c, f.get("volume", "")), True),
    "delete-snapshot": (lambda c, f: actions.delete_snapshot(c, f.get("snapshot", "")), True),
    "delete-backup": (
        lambda c, f: actions.delete_backup(c, f.get("target", ""), f.get("backup", "")),
        True,
    ),
    "run-job": (lambda c, f: actions.run_job(c, f.get("job", "")), False),
}
"""Action name -> (the call, whether it destroys something and needs `confirm=yes`)."""


def run_action(ctx: WebContext, name: str, form: Form) -> dict[str, Any]:
    """Run one action from its form; the JSON answer."""
    if name not in ACTIONS:
        raise NotFound(f"no action {name!r}")
    call, destroys = ACTIONS[name]
    if destroys and form.get("confirm") != "yes":
        raise InvalidArgument(f"{name} destroys data: confirm it (confirm=yes)")
    result = call(ctx, form)
    if isinstance(result, Operation):
        return _operation(result)
    assert isinstance(result, actions.Done)
    return {"ok": True, "message": result.message, "location": result.location}


def create_app(config: DashboardConfig, ctx: WebContext) -> FastAPI:
    """The dashboard application."""
    app = FastAPI(title="Amber", docs_url=None, redoc_url=None, openapi_url=None)
    dash = Dashboard(config, ctx)
    app.middleware("http")(dash.gate)
    _error_handlers(app, dash)
    _pages(app, dash)
    _api(app, dash)
    _posts(app, dash)
    return app


def _error_handlers(app: FastAPI, dash: Dashboard) -> None:
    @app.exception_handler(AmberError)
    async def amber_error(request: Request, error: AmberError) -> Response:
        return dash.error_page(request, http_status(error), error.message)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, error: Forbidden) -> Response:
        return JSONResponse({"ok": False, "error": str(error)}, status_code=403)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> Response:
        ref = secrets.token_hex(4)
        log.error(
            "dashboard request %s %s failed (ref %s)",
            request.method,
            request.url.path,
            ref,
            exc_info=error,
        )
        return dash.error_page(request, 500, f"internal error (ref {ref} in the dashboard log)")


def _pages(app: FastAPI, dash: Dashboard) -> None:
    ctx = dash.ctx

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> Response:
        return dash.page(request, "overview.html", o=views.overview(ctx))

    @app.get("/volumes", response_class=HTMLResponse)
    def volumes(request: Request) -> Response:
        return dash.page(
            request, "volumes.html", volumes=views.volumes(ctx), targets=_target_names(ctx)
        )

    @app.get("/volumes/{name}", response_class=HTMLResponse)
    def volume(request: Request, name: str) -> Response:
        detail = views.volume(ctx, name)
        return dash.page(request, "volume.html", d=detail, targets=_target_names(ctx))

    @app.get("/backups", response_class=HTMLResponse)
    def backups(request: Request) -> Response:
        found = [views.target_backups(ctx, t) for t in _target_names(ctx)]
        return dash.page(request, "backups.html", targets=found)

    @app.get("/targets", response_class=HTMLResponse)
    def targets(request: Request, refresh: bool = False) -> Response:
        return dash.page(request, "targets.html", targets=views.targets(ctx, refresh=refresh))

    @app.get("/jobs", response_class=HTMLResponse)
    def jobs(request: Request) -> Response:
        return dash.page(request, "jobs.html", page=views.jobs(ctx))

    @app.get("/operations", response_class=HTMLResponse)
    def operations(request: Request) -> Response:
        return dash.page(
            request,
            "operations.html",
            operations=views.operations(ctx),
            uploads=views.driver_uploads(ctx),
        )

    _public_pages(app, dash)


def _public_pages(app: FastAPI, dash: Dashboard) -> None:
    @app.get("/login", response_class=HTMLResponse)
    def login(request: Request, next: str = "/") -> Response:
        return dash.page(request, "login.html", next=_local(next), failed=False)

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise NotFound(f"no static file {name!r}")
        data = resources.files("amber.web").joinpath("static", name).read_bytes()
        return Response(data, media_type=STATIC[name], headers={"Cache-Control": "max-age=60"})


def _local(path: str) -> str:
    """A redirect target on this server only (no open redirect)."""
    return path if path.startswith("/") and not path.startswith("//") else "/"


def _target_names(ctx: WebContext) -> list[str]:
    try:
        return sorted(ctx.targets.load())
    except AmberError:
        return []


def _api(app: FastAPI, dash: Dashboard) -> None:
    ctx = dash.ctx

    def answer(value: Any) -> JSONResponse:
        return JSONResponse(views.jsonable(value))

    app.get("/api/overview")(lambda: answer(views.overview(ctx)))
    app.get("/api/volumes")(lambda: answer(views.volumes(ctx)))
    app.get("/api/jobs")(lambda: answer(views.jobs(ctx)))
    app.get("/api/operations")(lambda: answer(views.operations(ctx)))
    app.get("/api/uploads")(lambda: answer(views.driver_uploads(ctx)))

    @app.get("/metrics")
    def metrics_(request: Request) -> Response:
        """The process's Prometheus metrics, negotiated as the metrics server does."""
        from amber import metrics

        body, content_type = metrics.exposition(request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    @app.get("/api/targets")
    def targets(refresh: bool = False) -> JSONResponse:
        return answer(views.targets(ctx, refresh=refresh))

    @app.get("/api/volumes/{name}")
    def volume(name: str) -> JSONResponse:
        return answer(views.volume(ctx, name))

    @app.get("/api/targets/{name}/backups")
    def backups(name: str) -> JSONResponse:
        ctx.target(name)  # NotFound for an unknown target
        return answer(views.target_backups(ctx, name))

    @app.get("/api/operations/{op_id}")
    def operation(op_id: int) -> JSONResponse:
        op = ctx.operations.get(op_id)
        if op is None:
            raise NotFound(f"no operation {op_id}")
        return answer(op)


def _posts(app: FastAPI, dash: Dashboard) -> None:
    @app.post("/actions/{name}")
    async def action(request: Request, name: str) -> JSONResponse:
        form = await dash.post_form(request)
        from starlette.concurrency import run_in_threadpool

        return JSONResponse(await run_in_threadpool(run_action, dash.ctx, name, form))

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await dash.post_form(request)
        target = _local(form.get("next", "/"))
        if not dash.guard.needs_login:
            return RedirectResponse(target, status_code=303)
        if not dash.guard.check_login(form.get("token", "")):
            return dash.page(request, "login.html", status=401, next=target, failed=True)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE, dash.guard.session_cookie(), httponly=True, samesite="strict", path="/"
        )
        return response
