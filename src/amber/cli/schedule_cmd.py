"""`amber schedule`: run recurring jobs from a YAML file against this node's pool.

`amber schedule run FILE` stays in the foreground (a systemd service, see docs/jobs.md): it logs
one line per run on stdout (with `-o json`, one JSON object per line), and SIGTERM or Ctrl-C
lets the running tasks finish, starts no new one and exits 0. `amber schedule check FILE`
validates the file and prints the next runs.
"""

from __future__ import annotations

import json
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from amber.cli import output
from amber.cli.job_cmd import Session, record_json, run_line
from amber.cli.state import state
from amber.cli.target_cmd import ConfigOption, remember_config
from amber.domain.errors import InvalidArgument
from amber.jobs.records import RunRecord
from amber.jobs.schedule import next_runs
from amber.jobs.spec import load_jobs_file

app = typer.Typer(
    help="Run recurring snapshot and backup jobs from a YAML file, in the foreground.",
    no_args_is_help=True,
)

JobsFile = Annotated[Path, typer.Argument(help="The job definitions (YAML, `jobs: [...]`).")]


@app.callback()
def group(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Schedules."""
    remember_config(ctx, config)


@app.command("check")
def check(
    ctx: typer.Context,
    file: JobsFile,
    count: Annotated[int, typer.Option("--next", help="How many next runs to show.")] = 3,
) -> None:
    """Validate FILE and print each job's next runs (no pool needed)."""
    st = state(ctx)
    if count < 1:
        raise InvalidArgument(f"--next must be 1 or more, not {count}")
    jobs = load_jobs_file(file)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [
        {
            "name": job.name,
            "task": job.task.value,
            "cron": job.cron,
            "timezone": job.timezone,
            "next_runs": [r.astimezone(job.zone).isoformat() for r in next_runs(job, now, count)],
        }
        for job in jobs
    ]
    if st.json:
        output.print_json(rows)
        return
    table = output.new_table(title=f"{len(jobs)} job(s) in {file}", title_justify="left")
    for column in ("JOB", "TASK", "CRON", "ZONE", "NEXT RUNS"):
        table.add_column(column)
    for row in rows:
        runs = ", ".join(t[:16].replace("T", " ") for t in row["next_runs"])
        table.add_row(row["name"], row["task"], row["cron"], row["timezone"], runs)
    output.console().print(output.fit(table, "JOB"))


@app.command("run")
def run(
    ctx: typer.Context,
    file: JobsFile,
    node_limit: Annotated[
        int, typer.Option("--node-limit", help="Tasks this node runs at once, over all jobs.")
    ] = 2,
) -> None:
    """Run the jobs of FILE on schedule until SIGTERM (then finish the running tasks, exit 0)."""
    st = state(ctx)
    if node_limit < 1:
        raise InvalidArgument(f"--node-limit must be 1 or more, not {node_limit}")
    jobs = load_jobs_file(file)

    def log(record: RunRecord) -> None:
        line = json.dumps(record_json(record), sort_keys=True) if st.json else run_line(record)
        print(line, flush=True)

    session = Session(ctx, st)
    try:
        scheduler = session.scheduler(jobs, log, node_limit)

        def stop(signum: int, _frame: FrameType | None) -> None:
            sys.stderr.write(f"{signal.Signals(signum).name}: finishing running tasks\n")
            scheduler.request_stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        scheduler.start()
        wake = scheduler.next_wake()
        first = wake.isoformat() if wake else "none"
        print(f"scheduling {len(jobs)} job(s) from {file}; next run {first}", flush=True)
        scheduler.serve()
    finally:
        session.close()
    print("stopped", flush=True)
