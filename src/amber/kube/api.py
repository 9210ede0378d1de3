"""The Kubernetes API calls the operator makes, over the official client.

Why the official `kubernetes` client and not kopf: Amber's scheduler is driven by time (the
`amber.jobs.Scheduler` loop), not by object events, and runs on EVERY node for the volumes of
that node; kopf's model (an asyncio handler per event, progress kept in annotations of the
object, peering so that one operator instance handles an object) fits neither. What is needed
is a cache of RecurringJobs (list + watch) and a handful of calls, which the official client
gives with its in-cluster loader (service-account token, re-read as it rotates, and the CA) and
its kubeconfig loader. Every call here goes through `ApiClient.call_api` with the raw JSON, so
the operator works on plain dicts in the API's own camelCase, and the client's models never
leak out of this module. The module is imported only by `amber node/controller
--recurring-jobs`: the client's import cost stays out of the CLI's cold path.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import urllib3
from kubernetes import client, config, watch

from amber.domain.errors import AlreadyExists, AmberError, NotFound, Unavailable

__all__ = ["GROUP", "VERSION", "KubeApi", "Obj", "connect"]

Obj = dict[str, Any]
GROUP: Final = "amber.csi.dev"
VERSION: Final = "v1alpha1"
JOBS: Final = f"/apis/{GROUP}/{VERSION}"
SNAPSHOTS: Final = "/apis/snapshot.storage.k8s.io/v1"
TIMEOUT: Final = 30.0


class ApiFailed(Unavailable):
    """The API server refused or failed a call; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def connect(kubeconfig: Path | None) -> KubeApi:
    """A client from `kubeconfig`, or the pod's service account when None (in-cluster)."""
    configuration = client.Configuration()
    try:
        if kubeconfig is None:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    except Exception as e:  # the loaders raise their own, yaml's, OSError, ValueError...
        where = kubeconfig or "the pod's service account"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Unavailable(
            f"cannot load the Kubernetes client configuration from {where}: {first}"
        ) from e
    return KubeApi(client.ApiClient(configuration))


def _ns_path(base: str, plural: str, namespace: str | None, name: str = "") -> str:
    ns = f"/namespaces/{quote(namespace)}" if namespace else ""
    return f"{base}{ns}/{plural}" + (f"/{quote(name)}" if name else "")


@dataclass
class KubeApi:
    """The calls, on plain dicts; failures raise `ApiFailed` (NotFound and AlreadyExists for
    404 and 409)."""

    api: Any
    """kubernetes.client.ApiClient."""

    def call(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        try:
            response = self.api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=TIMEOUT,
            )
        except client.ApiException as e:
            raise _failure(method, path, e) from None
        except (OSError, urllib3.exceptions.HTTPError) as e:  # no answer (after retries)
            reason = getattr(e, "reason", None) or e
            raise ApiFailed(f"{method} {path}: the API server does not answer: {reason}", 0) from e
        data: Obj = json.loads(response[0].data or b"{}")
        return data

    # -- RecurringJobs

    def list_jobs(self, namespace: str | None) -> Obj:
        return self.call("GET", _ns_path(JOBS, "recurringjobs", namespace))

    def watch_jobs(
        self, namespace: str | None, resource_version: str, timeout: int
    ) -> Iterator[Obj]:
        """Watch events ({"type", "object"}) from `resource_version` for up to `timeout` s."""
        objects = client.CustomObjectsApi(self.api)
        args: tuple[str, ...]
        if namespace:
            func, args = objects.list_namespaced_custom_object, (namespace,)
        else:
            func, args = objects.list_cluster_custom_object, ()
        stream = watch.Watch().stream(
            func,
            GROUP,
            VERSION,
            *args,
            "recurringjobs",
            resource_version=resource_version,
            timeout_seconds=timeout,
            allow_watch_bookmarks=False,
        )
        try:
            yield from stream
        except client.ApiException as e:
            raise _failure("WATCH", "recurringjobs", e) from None
        except (OSError, urllib3.exceptions.HTTPError) as e:
            raise ApiFailed(f"WATCH recurringjobs: the API server does not answer: {e}", 0) from e

    def patch_job_status(self, namespace: str, name: str, status: Obj) -> None:
        path = _ns_path(JOBS, "recurringjobs", namespace, name) + "/status"
        self.call("PATCH", path, {"status": status}, content_type="application/merge-patch+json")

    # -- claims and volumes

    def list_claims(self, namespace: str) -> list[Obj]:
        items: list[Obj] = self.call(
            "GET", _ns_path("/api/v1", "persistentvolumeclaims", namespace)
        )["items"]
        return items

    def get_volume(self, name: str) -> Obj:
        return self.call("GET", _ns_path("/api/v1", "persistentvolumes", None, name))

    # -- snapshots

    def list_snapshots(self, namespace: str, selector: str) -> list[Obj]:
        path = _ns_path(SNAPSHOTS, "volumesnapshots", namespace)
        items: list[Obj] = self.call("GET", path, query={"labelSelector": selector})["items"]
        return items

    def get_snapshot_class(self, name: str) -> Obj:
        return self.call("GET", _ns_path(SNAPSHOTS, "volumesnapshotclasses", None, name))

    def get_snapshot(self, namespace: str, name: str) -> Obj:
        return self.call("GET", _ns_path(SNAPSHOTS, "volumesnapshots", namespace, name))

    def create_snapshot(self, namespace: str, body: Obj) -> Obj:
        return self.call("POST", _ns_path(SNAPSHOTS, "volumesnapshots", namespace), body)

    def delete_snapshot(self, namespace: str, name: str) -> None:
        with contextlib.suppress(NotFound):
            self.call("DELETE", _ns_path(SNAPSHOTS, "volumesnapshots", namespace, name))

    def get_content(self, name: str) -> Obj:
        return self.call("GET", _ns_path(SNAPSHOTS, "volumesnapshotcontents", None, name))

    # -- events

    def create_event(self, namespace: str, body: Obj) -> None:
        self.call("POST", _ns_path("/api/v1", "events", namespace), body)


def _failure(method: str, path: str, e: Any) -> AmberError:
    status = int(getattr(e, "status", 0) or 0)
    message = _message(getattr(e, "body", None)) or str(getattr(e, "reason", e))
    text = f"{method} {path}: {message}"
    if status == 404:
        return NotFound(text)
    if status == 409:
        return AlreadyExists(text)
    return ApiFailed(f"{text} (HTTP {status})", status)


def _message(body: Any) -> str:
    try:
        return str(json.loads(body)["message"])
    except (TypeError, ValueError, KeyError):
        return ""
