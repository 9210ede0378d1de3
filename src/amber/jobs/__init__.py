"""Recurring jobs: snapshots, backups, cleanup, prune, check and trim on a cron schedule.

A job (`spec.JobSpec`, parsed from the same camelCase fields as the Kubernetes RecurringJob
resource) says what to do, when (`schedule`: cron in a time zone, one catch-up run after
downtime, deterministic jitter), to which volumes (names, labels, groups) and what to keep
(`retention`: keep-last and grandfather-father-son, separately for local snapshots and remote
backups). The scheduler (`runner.Scheduler`) drives due jobs with per-job and per-node
concurrency limits, skips volumes unchanged since the job's last run, applies retention after
a successful run and records every run (`records`). The work itself is an `executor.Executor`:
the local pool's (`local`) or the Kubernetes operator's.
"""
