"""`amber job`: list recurring jobs, run one now, show what their runs did.

Jobs are defined in a YAML file (`--file`, default /etc/amber/jobs.yaml; the format is the
Kubernetes RecurringJob spec, see docs/jobs.md) and run by `amber schedule run`. Every run is
recorded in the pool (`jobs.db`), whoever ran it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from amber.backup.repository import Repository
from amber.backup.targets import TargetRuntime, open_target_repository
from amber.cli import output
from amber.cli.state import CliState, state
from amber.cli.target_cmd import ConfigOption, remember_config, runtime_for, targets_config
from amber.domain.errors import InvalidArgument
from amber.domain.units import format_size
from amber.jobs.local import LocalExecutor
from amber.jobs.records import Records, RunOutcome, RunRecord
from amber.jobs.runner import Scheduler, SystemClock
from amber.jobs.spec import DEFAULT_JOBS_FILE, JobSpec, find_job, load_jobs_file
from amber.jobs.status import JobStatus, job_status
from amber.ops.backups import RepositoryOpener
from amber.pool import Pool

app = typer.Typer(
    help="List recurring jobs, run one now, and show the history of their runs.",
    no_args_is_help=True,
)

FileOption = Annotated[
    Path,
    typer.Option(
        "--file",
        "-f",
        envvar="AMBER_JOBS_FILE",
        help="The job definitions (YAML, `jobs: [...]`).",
        show_envvar=True,
    ),
]


@app.callback()
def group(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Recurring jobs."""
    remember_config(ctx, config)


# -- shared with `amber schedule` --------------------------------------------------------------


def repository_opener(ctx: typer.Context) -> RepositoryOpener:
    """Opens a target's repository by name from the targets file, as `amber backup` does."""
    config = targets_config(ctx)

    def open_repository(target: str, *, create: bool = False) -> Repository:
        found = config.get(target)
        runtime = TargetRuntime.for_commands(os.environ)
        return open_target_repository(found, create=create, runtime=runtime_for(found, runtime))

    return open_repository


def run_line(record: RunRecord) -> str:
    """One line for a run: what `amber schedule run` logs and `job run-now` prints."""
    started = datetime.fromtimestamp(record.start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    parts = [started, record.job, record.task, record.subject, record.outcome.value]
    if record.created:
        parts.append("created " + ",".join(record.created))
    if record.deleted:
        parts.append("deleted " + ",".join(record.deleted))
    if record.bytes:
        parts.append(format_size(record.bytes))
    parts.append(f"{record.end - record.start:.1f}s")
    if record.reason:
        parts.append(f"({record.reason})")
    return " ".join(parts)


def record_json(record: RunRecord) -> dict[str, Any]:
    found: dict[str, Any] = output.to_jsonable(record)
    found["outcome"] = record.outcome.value
    return found


class Session:
    """The pool, the job records and the executor of one command; close() releases them."""

    def __init__(self, ctx: typer.Context, st: CliState) -> None:
        self.pool: Pool = st.open_pool()
        try:
            self.records = Records.in_pool(self.pool.root)
        except BaseException:
            self.pool.close()
            raise
        self.executor = LocalExecutor(self.pool, self.records, repository_opener(ctx))

    def scheduler(
        self,
        jobs: Sequence[JobSpec],
        on_record: Callable[[RunRecord], None] | None = None,
        node_limit: int = 2,
    ) -> Scheduler:
        return Scheduler(
            SystemClock(),
            self.executor,
            self.records,
            jobs=jobs,
            on_record=on_record,
            node_limit=node_limit,
        )

    def close(self) -> None:
        self.records.close()
        self.pool.close()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


# -- commands ------------------------------------------------------------------------------------


@app.command("list")
def list_(ctx: typer.Context, file: FileOption = DEFAULT_JOBS_FILE) -> None:
    """Every job of the file: schedule, next run, and its last run's outcome."""
    st = state(ctx)
    jobs = load_jobs_file(file)
    session = Session(ctx, st)
    try:
        now = datetime.now(UTC)
        rows = [_job_row(job_status(session.records, job, now)) for job in jobs]
    finally:
        session.close()
    if st.json:
        output.print_json(rows)
        return
    table = output.new_table(title="Jobs", title_justify="left")
    for column in ("JOB", "TASK", "CRON", "ZONE", "NEXT RUN", "LAST RUN", "OUTCOME"):
        table.add_column(column)
    for row in rows:
        last = row["last_run"] or {}
        table.add_row(
            row["name"],
            row["task"],
            row["cron"],
            row["timezone"],
            row["next_run"],
            output.when(last["start_ts"]) if last else "never",
            last.get("outcome", "-"),
        )
    output.console().print(output.fit(table, "JOB"))


def _job_row(status: JobStatus) -> dict[str, Any]:
    job, last = status.job, status.last_run
    return {
        "name": job.name,
        "task": job.task.value,
        "cron": job.cron,
        "timezone": job.timezone,
        "target": job.target,
        "next_run": _iso(status.next_run.timestamp()),
        "last_run": None
        if last is None
        else {
            "subject": last.subject,
            "outcome": last.outcome.value,
            "start": _iso(last.start),
            "start_ts": last.start,
            "reason": last.reason,
        },
    }


@app.command("run-now")
def run_now(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job's name in the file.")],
    file: FileOption = DEFAULT_JOBS_FILE,
    force: Annotated[
        bool, typer.Option("--force", help="Run on volumes unchanged since the job's last run.")
    ] = False,
) -> None:
    """Run JOB once now on every volume it selects (its schedule is not moved)."""
    st = state(ctx)
    spec = find_job(load_jobs_file(file), job, file)

    def progress(record: RunRecord) -> None:
        if not st.json:
            output.console().print(run_line(record), markup=False, highlight=False)

    session = Session(ctx, st)
    try:
        done = session.scheduler([spec], progress).run_now(spec, force=force)
    finally:
        session.close()
    if st.json:
        output.print_json([record_json(r) for r in done])
    elif not done:
        output.console().print(f"Job {job} selects no volume.")
    failed = [r for r in done if r.outcome is RunOutcome.FAILED]
    if failed:
        sys.stderr.write(
            f"error: job {job} failed on {len(failed)} of {len(done)}: "
            f"{failed[0].subject}: {failed[0].reason}\n"
        )
        raise typer.Exit(1)


@app.command("history")
def history(
    ctx: typer.Context,
    job: Annotated[str | None, typer.Argument(help="Only this job's runs.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs, newest first.")] = 20,
) -> None:
    """The newest runs (of every job, or of JOB): outcome, what they created and deleted."""
    st = state(ctx)
    if limit < 1:
        raise InvalidArgument(f"--limit must be 1 or more, not {limit}")
    pool = st.open_pool()
    try:
        records = Records.in_pool(pool.root)
        try:
            runs = records.history(job, limit)
        finally:
            records.close()
    finally:
        pool.close()
    if st.json:
        output.print_json([record_json(r) for r in runs])
        return
    if not runs:
        output.console().print("No runs recorded." if job is None else f"No runs of job {job}.")
        return
    for record in runs:
        output.console().print(run_line(record), markup=False, highlight=False)
