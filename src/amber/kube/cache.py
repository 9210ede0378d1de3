"""A cache of RecurringJobs: list, then watch from the list's resourceVersion, in a thread.

The scheduler reads `jobs()` whenever it plans; the cache calls `on_change` after every change
so that a new or edited job is planned at once, not at the next tick. A watch that ends (the
server's timeout) resumes from the last resourceVersion seen; one the server refuses (410 Gone:
the version is too old) or that fails starts over with a fresh list, after a pause that grows
up to a minute while the API server does not answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Final

from amber.domain.errors import AmberError
from amber.kube.api import KubeApi, Obj
from amber.kube.resources import JobObject

__all__ = ["JobCache"]

_log = logging.getLogger(__name__)
WATCH_SECONDS: Final = 300
MAX_PAUSE: Final = 60.0


class JobCache:
    def __init__(
        self,
        api: KubeApi,
        namespaces: Sequence[str],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._api = api
        self._namespaces: list[str | None] = list(namespaces) or [None]
        self._on_change = on_change
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, JobObject]] = {}
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for namespace in self._namespaces:
            thread = threading.Thread(
                target=self._run, args=(namespace,), name=f"rj-watch-{namespace or 'all'}",
                daemon=True,
            )  # fmt: skip
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def jobs(self) -> list[JobObject]:
        with self._lock:
            return sorted(
                (job for jobs in self._jobs.values() for job in jobs.values()),
                key=lambda j: j.key,
            )

    def _run(self, namespace: str | None) -> None:
        pause = 1.0
        while not self._stop.is_set():
            try:
                version = self._relist(namespace)
                pause = 1.0
                self._watch(namespace, version)
            except AmberError as e:
                _log.warning("RecurringJob watch (%s): %s", namespace or "all namespaces", e)
                self._stop.wait(pause)
                pause = min(pause * 2, MAX_PAUSE)
            except Exception:  # the client's own errors (decoding, protocol): start over
                _log.exception("RecurringJob watch (%s) failed", namespace or "all namespaces")
                self._stop.wait(pause)
                pause = min(pause * 2, MAX_PAUSE)

    def _relist(self, namespace: str | None) -> str:
        listed = self._api.list_jobs(namespace)
        jobs = {job.key: job for job in map(JobObject.of, listed.get("items", []))}
        with self._lock:
            self._jobs[namespace or ""] = jobs
        if len(self._jobs) == len(self._namespaces):
            self._synced.set()
        self._on_change()
        return str(listed["metadata"]["resourceVersion"])

    def _watch(self, namespace: str | None, version: str) -> None:
        """Apply watch events until the watch ends or fails (then the caller lists again)."""
        while not self._stop.is_set():
            for event in self._api.watch_jobs(namespace, version, WATCH_SECONDS):
                if self._stop.is_set():
                    return
                obj: Obj = event["object"]
                if event["type"] == "ERROR":
                    return  # 410 Gone and the like: list again
                version = str(obj["metadata"]["resourceVersion"])
                self._apply(namespace, event["type"], obj)

    def _apply(self, namespace: str | None, kind: str, obj: Obj) -> None:
        job = JobObject.of(obj)
        with self._lock:
            jobs = self._jobs.setdefault(namespace or "", {})
            if kind == "DELETED":
                jobs.pop(job.key, None)
            else:
                jobs[job.key] = job
        self._on_change()
