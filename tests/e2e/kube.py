"""A tiny Kubernetes client for the end-to-end tests: JSON over HTTPS with a bearer token for
reads and waits, `kubectl` for applying YAML (what a user types)."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

GROUP_PATHS = {
    "v1": "/api/v1",
    "storage.k8s.io/v1": "/apis/storage.k8s.io/v1",
    "snapshot.storage.k8s.io/v1": "/apis/snapshot.storage.k8s.io/v1",
    "groupsnapshot.storage.k8s.io/v1beta2": "/apis/groupsnapshot.storage.k8s.io/v1beta2",
    "amber.csi.dev/v1alpha1": "/apis/amber.csi.dev/v1alpha1",
}
PLURALS = {
    "persistentvolumeclaims": "v1",
    "persistentvolumes": "v1",
    "events": "v1",
    "namespaces": "v1",
    "nodes": "v1",
    "serviceaccounts": "v1",
    "csinodes": "storage.k8s.io/v1",
    "csistoragecapacities": "storage.k8s.io/v1",
    "storageclasses": "storage.k8s.io/v1",
    "volumesnapshots": "snapshot.storage.k8s.io/v1",
    "volumesnapshotcontents": "snapshot.storage.k8s.io/v1",
    "volumesnapshotclasses": "snapshot.storage.k8s.io/v1",
    "volumegroupsnapshots": "groupsnapshot.storage.k8s.io/v1beta2",
    "volumegroupsnapshotcontents": "groupsnapshot.storage.k8s.io/v1beta2",
    "volumegroupsnapshotclasses": "groupsnapshot.storage.k8s.io/v1beta2",
    "recurringjobs": "amber.csi.dev/v1alpha1",
}


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


def write_kubeconfig(path: Path, server: str, ca: Path, token: str, user: str) -> Path:
    """A kubeconfig (JSON is YAML) for `user` with a bearer token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "e2e", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
        "current-context": "e2e",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


@dataclass
class Kube:
    server: str
    ca: Path
    token: str
    kubectl_bin: Path
    kubeconfig: Path

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def request(self, method: str, path: str, body: Obj | None = None, patch: bool = False) -> Obj:
        result: Obj = json.loads(self.raw(method, path, body, patch) or b"{}")
        return result

    def raw(self, method: str, path: str, body: Obj | None = None, patch: bool = False) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            ctype = "application/merge-patch+json" if patch else "application/json"
            headers["Content-Type"] = ctype
        req = urllib.request.Request(self.server + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(req, context=self._context(), timeout=30) as resp:
                answer: bytes = resp.read()
                return answer
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, e.read().decode(errors="replace")) from None

    @staticmethod
    def path(plural: str, name: str = "", namespace: str = "") -> str:
        base = GROUP_PATHS[PLURALS[plural]]
        ns = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")

    def get(self, plural: str, name: str, namespace: str = "") -> Obj:
        return self.request("GET", self.path(plural, name, namespace))

    def find(self, plural: str, name: str, namespace: str = "") -> Obj | None:
        try:
            return self.get(plural, name, namespace)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def list(
        self, plural: str, namespace: str = "", selector: str = "", labels: str = ""
    ) -> list[Obj]:
        path = self.path(plural, namespace=namespace)
        query = [f"fieldSelector={selector}"] if selector else []
        query += [f"labelSelector={urllib.parse.quote(labels)}"] if labels else []
        if query:
            path += "?" + "&".join(query)
        items: list[Obj] = self.request("GET", path)["items"]
        return items

    def create(self, obj: Obj) -> Obj:
        plural = plural_of(obj)
        namespace = obj["metadata"].get("namespace", "")
        return self.request("POST", self.path(plural, namespace=namespace), obj)

    def patch(self, plural: str, name: str, body: Obj, namespace: str = "") -> Obj:
        return self.request("PATCH", self.path(plural, name, namespace), body, patch=True)

    def delete(self, plural: str, name: str, namespace: str = "") -> None:
        try:
            self.request("DELETE", self.path(plural, name, namespace))
        except ApiError as e:
            if e.status != 404:
                raise

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [str(self.kubectl_bin), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout

    def apply(self, documents: str | Sequence[Obj]) -> None:
        """`kubectl apply -f -` of YAML text or of objects."""
        text = documents if isinstance(documents, str) else yaml.safe_dump_all(documents)
        self.kubectl("apply", "-f", "-", stdin=text)

    def events_for(self, namespace: str, name: str) -> list[str]:
        """The messages of the events about the object `name` in `namespace`."""
        events = self.list("events", namespace, f"involvedObject.name={name}")
        return [str(e.get("message", "")) for e in events]


def plural_of(obj: Obj) -> str:
    kind = str(obj["kind"]).lower()
    return kind + ("es" if kind.endswith("s") else "s")


def until(what: str, probe: Callable[[], Any], timeout: float = 90, interval: float = 0.2) -> Any:
    """Poll `probe` until it returns something true; return it. Fail with `what` after
    `timeout` seconds, showing the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
