"""The Kubernetes objects the operator reads and writes, as plain dicts (pure: no API calls).

- A `RecurringJob`'s spec is an `amber.jobs` job definition with three Kubernetes-only fields
  (`snapshotClassName`, `localSnapshotClassName`, and the job's name from `metadata.name`);
  `job_definition` splits them off so that `amber.jobs.spec.parse_job` checks the rest, the
  same rule for the YAML file and the resource.
- A PVC is a volume of the job's selection: its name, labels and groups (label
  `recurring-job-group.amber.csi.dev/<group>: enabled`, as Longhorn's
  `recurring-job-group.longhorn.io/<group>`); it is on a node when its PV is Amber's and the
  PV's node affinity names that node.
- A scheduled snapshot is a VolumeSnapshot labelled with its job (`amber.csi.dev/recurring-job`)
  and its PVC (`amber.csi.dev/pvc`); retention only ever looks at those labels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from amber.jobs.spec import openapi_schema
from amber.kube.api import GROUP, VERSION, Obj

__all__ = [
    "DRIVER",
    "GROUP_LABEL_PREFIX",
    "JOB_LABEL",
    "PVC_LABEL",
    "TOPOLOGY_KEY",
    "Claim",
    "JobObject",
    "claim_groups",
    "crd_spec_schema",
    "job_definition",
    "parse_time",
    "pv_node",
    "snapshot_body",
    "snapshot_name",
]

DRIVER: Final = "amber.csi.dev"
TOPOLOGY_KEY: Final = "topology.amber.csi.dev/node"
JOB_LABEL: Final = "amber.csi.dev/recurring-job"
PVC_LABEL: Final = "amber.csi.dev/pvc"
GROUP_LABEL_PREFIX: Final = "recurring-job-group.amber.csi.dev/"
ENABLED: Final = "enabled"
KUBE_FIELDS: Final = ("snapshotClassName", "localSnapshotClassName")
DEFAULT_LOCAL_CLASS: Final = "amber-local"
NAME_MAX: Final = 253


def crd_spec_schema() -> Obj:
    """The `spec` schema of the RecurringJob CRD: `amber.jobs.spec.openapi_schema()` (one field
    list for the YAML file and the resource) as a structural schema -- no `name` (it is
    `metadata.name`), no `additionalProperties: false` beside `properties` (the API server
    drops or refuses unknown fields itself), no defaults (the parser's defaults apply, and a
    defaulted `skipUnchanged` would make a prune job invalid) -- plus the classes."""
    schema: Obj = _structural(openapi_schema())
    del schema["properties"]["name"]
    for field in KUBE_FIELDS:
        schema["properties"][field] = {"type": "string", "maxLength": NAME_MAX}
    return schema


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _structural(v) for k, v in node.items() if k != "default"}
    if "properties" in out and out.get("additionalProperties") is False:
        del out["additionalProperties"]
    return out


@dataclass(frozen=True)
class JobObject:
    """One RecurringJob as the cache holds it."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: Obj
    status: Obj

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def snapshot_class(self) -> str | None:
        value = self.spec.get("snapshotClassName")
        return str(value) if value else None

    @property
    def local_class(self) -> str:
        return str(self.spec.get("localSnapshotClassName") or DEFAULT_LOCAL_CLASS)

    @classmethod
    def of(cls, obj: Obj) -> JobObject:
        meta = obj["metadata"]
        return cls(
            namespace=str(meta["namespace"]),
            name=str(meta["name"]),
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation", 0)),
            spec=dict(obj.get("spec") or {}),
            status=dict(obj.get("status") or {}),
        )

    def reference(self) -> Obj:
        """The object reference of an event about this job."""
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "RecurringJob",
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }


def job_definition(job: JobObject, target: str | None = None) -> dict[str, Any]:
    """The `amber.jobs` definition of the job: its spec less the Kubernetes-only fields, named
    after the object; `target` (a backup job's, from its snapshot class) when the spec names
    none."""
    definition = {k: v for k, v in job.spec.items() if k not in KUBE_FIELDS}
    definition["name"] = job.name
    if target is not None and "target" not in definition:
        definition["target"] = target
    return definition


@dataclass(frozen=True)
class Claim:
    """A bound PVC of Amber's: the volume of a job's selection."""

    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str]
    groups: frozenset[str]
    volume_handle: str
    node: str

    def reference(self) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }


def claim_groups(labels: Mapping[str, str]) -> frozenset[str]:
    """The groups a PVC's labels put it in (none: the job rules put it in `default`)."""
    return frozenset(
        key.removeprefix(GROUP_LABEL_PREFIX)
        for key, value in labels.items()
        if key.startswith(GROUP_LABEL_PREFIX) and value == ENABLED
    )


def pv_node(pv: Obj) -> str | None:
    """The node an Amber PV lives on (its node affinity on Amber's topology key), else None."""
    spec = pv.get("spec") or {}
    if (spec.get("csi") or {}).get("driver") != DRIVER:
        return None
    required = (spec.get("nodeAffinity") or {}).get("required") or {}
    terms = required.get("nodeSelectorTerms") or []
    for term in terms:
        for expression in term.get("matchExpressions") or []:
            values = expression.get("values") or []
            if expression.get("key") == TOPOLOGY_KEY and len(values) == 1:
                return str(values[0])
    return None


def claim_of(pvc: Obj, pv: Obj) -> Claim | None:
    """The Claim of a bound PVC and its PV, or None when the PV is not Amber's."""
    node = pv_node(pv)
    if node is None:
        return None
    meta = pvc["metadata"]
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    return Claim(
        namespace=str(meta["namespace"]),
        name=str(meta["name"]),
        uid=str(meta.get("uid", "")),
        labels=labels,
        groups=claim_groups(labels),
        volume_handle=str(pv["spec"]["csi"]["volumeHandle"]),
        node=node,
    )


def snapshot_name(job: str, pvc: str, at: datetime) -> str:
    """`<job>-<pvc>-<UTC yyyymmdd-hhmmss>`, shortened with a hash to stay a valid name."""
    stamp = at.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    name = f"{job}-{pvc}-{stamp}"
    if len(name) <= NAME_MAX:
        return name
    digest = hashlib.sha256(f"{job}/{pvc}".encode()).hexdigest()[:10]
    return f"{job[:100]}-{digest}-{stamp}"


def snapshot_body(job: JobObject, claim: Claim, name: str, snapshot_class: str) -> Obj:
    """A VolumeSnapshot of the claim, labelled with the job, its PVC and the job's labels."""
    labels = {str(k): str(v) for k, v in (job.spec.get("labels") or {}).items()}
    labels.update({JOB_LABEL: job.name, PVC_LABEL: claim.name})
    return {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name, "namespace": claim.namespace, "labels": labels},
        "spec": {
            "volumeSnapshotClassName": snapshot_class,
            "source": {"persistentVolumeClaimName": claim.name},
        },
    }


def parse_time(text: str | None) -> datetime | None:
    """An API timestamp (RFC 3339, `Z`) as an aware datetime."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def api_time(at: datetime) -> str:
    """An aware datetime as the API writes times (RFC 3339 in UTC, seconds)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
