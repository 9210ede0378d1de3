"""`amber dashboard`: the web dashboard of one pool and its targets, in the foreground.

It binds 127.0.0.1:8080 by default; another address reachable from other machines needs
`--token-file` (the rule lives in `amber.web.config`). FastAPI and uvicorn are imported only
when the command runs. See docs/dashboard.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from amber.backup.targets import DEFAULT_CONFIG, TargetRuntime
from amber.cli.state import CliState, state
from amber.domain.errors import InvalidArgument
from amber.jobs.spec import DEFAULT_JOBS_FILE
from amber.logs import LogStyle, setup_server_logging
from amber.ops.probes import MetricsSources
from amber.pool import Pool, PoolSettings
from amber.web.config import DEFAULT_ADDRESS, Address, DashboardConfig, build_config

log = logging.getLogger(__name__)
AddressOption = Annotated[
    str,
    typer.Option(
        "--address",
        help="HOST:PORT to listen on. Anything but loopback needs --token-file.",
    ),
]
TOKEN_HELP = (
    "File with the dashboard's token (16+ characters) that browsers and API clients must give; "
    "required for an address other machines can reach."
)
TokenOption = Annotated[Path | None, typer.Option("--token-file", help=TOKEN_HELP)]
NodeTokenOption = Annotated[Path | None, typer.Option("--dashboard-token-file", help=TOKEN_HELP)]


def dashboard(
    ctx: typer.Context,
    pool: Annotated[
        Path | None,
        typer.Option("--pool", help="Pool directory (overrides the global --pool)."),
    ] = None,
    targets: Annotated[
        Path, typer.Option("--targets", help="Targets file (as `amber target --config`).")
    ] = DEFAULT_CONFIG,
    address: AddressOption = DEFAULT_ADDRESS,
    token_file: TokenOption = None,
    jobs_file: Annotated[
        Path,
        typer.Option(
            "--jobs-file",
            envvar="AMBER_JOBS_FILE",
            help="The recurring jobs the jobs page shows and runs (as `amber job --file`).",
            show_envvar=True,
        ),
    ] = DEFAULT_JOBS_FILE,
) -> None:
    """Serve the web dashboard of the pool and its backup targets (Ctrl-C stops it)."""
    st = state(ctx)
    config = build_config(pool or st.pool, targets, address, token_file, jobs_file=jobs_file)
    setup_server_logging(verbose=st.verbose, style=LogStyle.AUTO)
    hit = _failpoint(st)
    opened = Pool.open(config.pool, settings=PoolSettings(), failpoint=hit)
    from amber.web.server import serve

    def ready(bound: Address) -> None:
        typer.echo(f"Amber dashboard on {bound.url()} (pool {opened.root}; Ctrl-C stops it)")

    sources = MetricsSources(opened, config.targets_config)  # the node's /metrics sources
    sources.start()
    try:
        serve(config, opened, TargetRuntime.for_commands(os.environ), ready, hit)
    finally:
        sources.stop()
        opened.close()


def dashboard_config(
    pool: Path, targets: Path, address: str | None, token_file: Path | None
) -> DashboardConfig | None:
    """`amber node`'s dashboard, checked before anything starts (None: not asked for)."""
    if address is None:
        if token_file is not None:
            raise InvalidArgument("--dashboard-token-file goes with --dashboard-address")
        return None
    return build_config(pool, targets, address, token_file, "--dashboard-token-file")


def start_dashboard(
    config: DashboardConfig, pool: Pool, *, metrics_served: bool
) -> Callable[[], None]:
    """Serve the dashboard in a thread of `amber node` (beside the CSI server) and log where.
    Its `/metrics` gets the pool's and targets' sources from the metrics server when that is
    served (`metrics_served`), else it registers them itself. It owns `pool` from here; the
    answer stops it (SIGTERM in `amber node`): the server thread ends and closes its requests'
    context, then the sources and the pool are released, as `amber dashboard` does."""
    from amber.web.server import start_in_thread

    sources = None if metrics_served else MetricsSources(pool, config.targets_config)

    def release() -> None:
        if sources is not None:
            sources.stop()
        pool.close()

    try:
        if sources is not None:
            sources.start()
        running = start_in_thread(config, pool, TargetRuntime.for_commands(os.environ))
    except BaseException:
        release()
        raise
    log.info("dashboard on %s", running.address.url())

    def stop() -> None:
        running.stop()
        release()

    return stop


PAUSE_ENV = "AMBER_TEST_PAUSE_AT"
"""Tests only: `NAME:FIFO` makes the failpoint NAME, the first time it is reached, wait until a
writer opens the FIFO (an event, not a sleep): a test watches the operation's progress meanwhile."""


def _failpoint(st: CliState) -> Callable[[str], None]:
    crash = st.failpoint()
    name, _, fifo = os.environ.get(PAUSE_ENV, "").partition(":")
    waiting = [bool(name)]

    def hit(point: str) -> None:
        crash(point)
        if waiting[0] and point == name:
            waiting[0] = False  # the first time only
            with open(fifo, "rb") as released:  # blocks until the test opens it for writing
                released.read()

    return hit
