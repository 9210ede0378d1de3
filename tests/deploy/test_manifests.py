"""deploy/ renders, validates against the Kubernetes and snapshot CRD schemas, and hangs together.

Schemas: kubernetes-validate's OpenAPI schemas (offline, strict: unknown fields are errors) for
the built-in kinds, and the snapshot CRDs of ../shared/k8s/crd for snapshot.storage.k8s.io
(made strict the same way). Consistency: what the workloads use exists, the RBAC lets the
node's sidecars read the secrets the classes name, the driver name and the class parameters
are the ones Amber's code accepts, and Amber's own arguments parse.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from amber.backup.targets import TargetConfig
from amber.cli.import_cmd import snapshot_objects, to_yaml
from amber.csi.identity import PLUGIN_NAME
from amber.csi.params import parse_snapshot_parameters, parse_volume_parameters
from amber.ops.targets import target_from_secrets
from amber.pool.bootstrap import parse_source
from tests.deploy.conftest import DEPLOY, KUSTOMIZATIONS, REPO

Obj = dict[str, Any]
Rendered = dict[str, list[Obj]]
Schemas = dict[tuple[str, str, str], Obj]

# The API server of the e2e suite is v1.36; 1.34 is the oldest release with every API used here
# at v1 (VolumeAttributesClass went GA in 1.34).
K8S_VERSIONS = ("1.34.0", "1.36.0")
NAMES = [str(d.relative_to(DEPLOY)) for d in KUSTOMIZATIONS]
AMBER = [n for n in NAMES if n == "base" or n.startswith("overlays/")]
"""The kustomizations that install Amber (the others: snapshot-controller)."""
EXAMPLES = sorted((DEPLOY / "examples").glob("*.yaml"))
SECRET_PARAMS = (
    (
        "csi.storage.k8s.io/provisioner-secret-name",
        "csi.storage.k8s.io/provisioner-secret-namespace",
    ),
    (
        "csi.storage.k8s.io/snapshotter-secret-name",
        "csi.storage.k8s.io/snapshotter-secret-namespace",
    ),
)


def test_there_is_a_base_and_an_open_local_overlay() -> None:
    assert {"base", "overlays/open-local-migration"} <= set(AMBER)
    assert "snapshot-controller" in NAMES


# -- schemas ------------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """A CRD schema that refuses unknown fields, as the API server's strict field validation
    does (CRD schemas only list the known ones)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def schema_errors(obj: Obj, crds: Schemas) -> list[str]:
    group, _, version = obj["apiVersion"].rpartition("/")
    name = f"{obj['kind']} {obj['metadata'].get('name')}"
    crd = crds.get((group, version, obj["kind"]))
    if crd is not None:
        body = {k: v for k, v in obj.items() if k != "metadata"}
        return [
            f"{name}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in jsonschema.Draft7Validator(strict(crd)).iter_errors(body)
        ]
    errors = []
    for k8s in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, k8s, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{name} (Kubernetes {k8s}): {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{name}: no schema for {obj['apiVersion']} in Kubernetes {k8s}")
    return errors


@pytest.mark.parametrize("name", NAMES)
def test_every_object_validates(name: str, rendered: Rendered, crd_schemas: Schemas) -> None:
    objects = rendered[name]
    assert objects
    errors = [error for obj in objects for error in schema_errors(obj, crd_schemas)]
    assert errors == []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate(path: Path, crd_schemas: Schemas) -> None:
    text = re.sub(r"NODE_[AB]", "worker-1", path.read_text())
    objects = [doc for doc in yaml.safe_load_all(text) if doc]
    assert objects
    assert [e for o in objects for e in schema_errors(o, crd_schemas)] == []


def test_the_validation_catches_mistakes(crd_schemas: Schemas) -> None:
    """The checks above can fail: a typo in a built-in kind and in a snapshot class."""
    bad_class = {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotClass",
        "metadata": {"name": "x"},
        "driver": PLUGIN_NAME,
        "deletionPolicy": "Keep",
        "parameter": {},
    }
    errors = schema_errors(bad_class, crd_schemas)
    assert any("'Keep' is not one of" in e for e in errors), errors
    assert any("'parameter' was unexpected" in e for e in errors), errors
    bad_driver = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIDriver",
        "metadata": {"name": PLUGIN_NAME},
        "spec": {"attachRequired": "no", "storageCapacty": True},
    }
    assert len(schema_errors(bad_driver, crd_schemas)) == len(K8S_VERSIONS)


def test_backup_import_output_validates(crd_schemas: Schemas) -> None:
    """What `amber backup import` prints (its own functions, the same text) is valid."""
    for policy, klass in (("Retain", None), ("Delete", "amber-backup")):
        objects = snapshot_objects(
            "amber:v1:backup:s3t:0a829b3f9e4a4c4e849b2a22c4a3449a",
            namespace="new-cluster",
            name="restored",
            driver=PLUGIN_NAME,
            deletion_policy=policy,
            snapshot_class=klass,
            content_name="restored-0a829b3f",
        )
        printed = "\n".join(f"---\n{to_yaml(o)}" for o in objects)
        parsed = [doc for doc in yaml.safe_load_all(printed) if doc]
        assert [o["kind"] for o in parsed] == ["VolumeSnapshotContent", "VolumeSnapshot"]
        assert [e for o in parsed for e in schema_errors(o, crd_schemas)] == []


# -- consistency --------------------------------------------------------------------------


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def find(objects: list[Obj], kind: str, name: str, namespace: str | None = None) -> Obj | None:
    for obj in of_kind(objects, kind):
        meta = obj["metadata"]
        if meta["name"] == name and meta.get("namespace") == namespace:
            return obj
    return None


def workloads(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, pod spec) of every DaemonSet and Deployment."""
    for obj in objects:
        if obj["kind"] in ("DaemonSet", "Deployment"):
            yield obj, obj["spec"]["template"]["spec"]


def containers(pod: Obj) -> list[Obj]:
    return [*pod.get("initContainers", []), *pod["containers"]]


@pytest.mark.parametrize("name", AMBER)
def test_workloads_use_what_exists(name: str, rendered: Rendered) -> None:
    objects = rendered[name]
    assert {o["metadata"]["name"] for o, _ in workloads(objects)} == {
        "amber-node",
        "amber-controller",
    }
    for workload, pod in workloads(objects):
        namespace = workload["metadata"]["namespace"]
        assert find(objects, "Namespace", namespace) is not None
        assert find(objects, "ServiceAccount", pod["serviceAccountName"], namespace) is not None
        for volume in pod["volumes"]:
            if "secret" in volume:
                assert find(objects, "Secret", volume["secret"]["secretName"], namespace)
            if "configMap" in volume:
                assert find(objects, "ConfigMap", volume["configMap"]["name"], namespace)
        mounted = {v["name"] for v in pod["volumes"]}
        for container in containers(pod):
            assert {m["name"] for m in container.get("volumeMounts", [])} <= mounted
            image = container["image"]
            assert re.fullmatch(r"[^:@]+(:[\w.-]+|@sha256:[0-9a-f]{64})", image), image
            assert not image.endswith(":latest"), image


@pytest.mark.parametrize("name", NAMES)
def test_bindings_name_existing_accounts_and_roles(name: str, rendered: Rendered) -> None:
    objects = rendered[name]
    bindings = of_kind(objects, "RoleBinding") + of_kind(objects, "ClusterRoleBinding")
    assert bindings
    for binding in bindings:
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        assert find(objects, ref["kind"], ref["name"], namespace), binding["metadata"]
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount"
            assert find(objects, "ServiceAccount", subject["name"], subject["namespace"])


def allows(
    objects: list[Obj], account: str, verb: str, resource: str, where: tuple[str, str]
) -> bool:
    """Whether the rendered RBAC lets ServiceAccount `account` (amber-system) do `verb` on the
    core-group `resource` named where[1] in namespace where[0]."""
    namespace, name = where
    for binding in of_kind(objects, "RoleBinding") + of_kind(objects, "ClusterRoleBinding"):
        if binding["kind"] == "RoleBinding" and binding["metadata"]["namespace"] != namespace:
            continue
        if not any(s["name"] == account for s in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        role_ns = namespace if ref["kind"] == "Role" else None
        role = find(objects, ref["kind"], ref["name"], role_ns) or {"rules": []}
        for rule in role["rules"]:
            if (
                "" in rule["apiGroups"]
                and resource in rule["resources"]
                and verb in rule["verbs"]
                and name in rule.get("resourceNames", [name])
            ):
                return True
    return False


def class_secrets(objects: list[Obj]) -> Iterator[tuple[Obj, str, str]]:
    for obj in of_kind(objects, "StorageClass") + of_kind(objects, "VolumeSnapshotClass"):
        params = obj.get("parameters", {})
        for name_key, namespace_key in SECRET_PARAMS:
            if name_key in params:
                yield obj, params[namespace_key], params[name_key]


@pytest.mark.parametrize("name", AMBER)
def test_class_secrets_exist_and_the_node_may_read_them(name: str, rendered: Rendered) -> None:
    objects = rendered[name]
    for klass, namespace, secret in class_secrets(objects):
        found = find(objects, "Secret", secret, namespace)
        assert found, (klass["metadata"], secret)
        assert allows(objects, "amber-node", "get", "secrets", (namespace, secret))
        # Amber reads a backup target (with its repository password) out of it.
        target = target_from_secrets(found["stringData"])
        assert target is not None
        assert target.password
    # The base grants no secrets at all; the check above is not vacuous.
    assert not allows(rendered["base"], "amber-node", "get", "secrets", ("kube-system", "x"))
    if name == "overlays/open-local-migration":
        assert len(list(class_secrets(objects))) == 2
        assert not allows(objects, "amber-node", "get", "secrets", ("kube-system", "other"))


@pytest.mark.parametrize("name", AMBER)
def test_driver_name_and_class_parameters_are_amber_s(name: str, rendered: Rendered) -> None:
    objects = rendered[name]
    assert [o["metadata"]["name"] for o in of_kind(objects, "CSIDriver")] == [PLUGIN_NAME]
    storage_classes = of_kind(objects, "StorageClass")
    assert {"amber-ext4", "amber-xfs", "amber-block"} <= {
        o["metadata"]["name"] for o in storage_classes
    }
    for klass in storage_classes:
        assert klass["provisioner"] == PLUGIN_NAME
        assert klass["volumeBindingMode"] == "WaitForFirstConsumer"
        assert klass["allowVolumeExpansion"] is True
        parse_volume_parameters(klass.get("parameters", {}))
    snapshot_classes = of_kind(objects, "VolumeSnapshotClass")
    assert {"amber-local", "amber-backup"} <= {o["metadata"]["name"] for o in snapshot_classes}
    for klass in snapshot_classes:
        assert klass["driver"] == PLUGIN_NAME
        params = klass.get("parameters", {})
        secret = None
        if "csi.storage.k8s.io/snapshotter-secret-name" in params:
            secret = find(
                objects,
                "Secret",
                params["csi.storage.k8s.io/snapshotter-secret-name"],
                params["csi.storage.k8s.io/snapshotter-secret-namespace"],
            )
        parse_snapshot_parameters(params, (secret or {}).get("stringData", {}))
    backup = next(o for o in snapshot_classes if o["metadata"]["name"] == "amber-backup")
    assert parse_snapshot_parameters(backup["parameters"]).backup


def amber_args(container: Obj) -> list[str]:
    """The container's arguments with $(VAR) references filled in as kubelet would."""
    return [re.sub(r"\$\((\w+)\)", "node-a", arg) for arg in container["args"]]


def test_amber_arguments_parse_and_name_mounted_files(rendered: Rendered) -> None:
    objects = rendered["base"]
    seen = 0
    for _, pod in workloads(objects):
        for container in containers(pod):
            if not container["image"].startswith("amber:"):
                continue
            seen += 1
            args = amber_args(container)
            done = subprocess.run(
                [sys.executable, "-m", "amber", *args, "--help"],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert done.returncode == 0, (args, done.stderr)
            mounts = [Path(m["mountPath"]) for m in container.get("volumeMounts", [])]
            for arg in args:
                option, _, value = arg.partition("=")
                if option in ("--pool", "--targets-config", "--source-dir"):
                    assert any(Path(value).is_relative_to(m) for m in mounts), (arg, mounts)
    assert seen == 3  # pool-init, amber (node), amber (controller)


def test_the_targets_file_is_in_the_mounted_secret(rendered: Rendered, tmp_path: Path) -> None:
    objects = rendered["base"]
    node = find(objects, "DaemonSet", "amber-node", "amber-system")
    assert node is not None
    pod = node["spec"]["template"]["spec"]
    amber = next(c for c in pod["containers"] if c["name"] == "amber")
    config = next(a for a in amber["args"] if a.startswith("--targets-config="))
    path = Path(config.partition("=")[2])
    mount = next(m for m in amber["volumeMounts"] if path.is_relative_to(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    secret = find(objects, "Secret", volume["secret"]["secretName"], "amber-system")
    assert secret is not None
    data = secret["stringData"]
    assert path.name in data
    # The Secret as the node sees it: one file per key; Amber's own loader reads it.
    for key, value in data.items():
        (tmp_path / key).write_text(value)
    target = TargetConfig(tmp_path / path.name).get("default")  # amber-backup's target
    for file in (target.secret_key_file, target.password_file):
        assert file is not None
        assert Path(file).is_file()


def test_pool_settings_parse(rendered: Rendered) -> None:
    for name in AMBER:
        config = find(rendered[name], "ConfigMap", "amber-pool", "amber-system")
        assert config is not None
        assert "default" in config["data"]
        for setting in config["data"].values():
            parse_source(setting)


def test_the_existing_xfs_overlay_puts_every_pool_on_the_node_s_mount(rendered: Rendered) -> None:
    objects = rendered["overlays/existing-xfs"]
    node = find(objects, "DaemonSet", "amber-node", "amber-system")
    assert node is not None
    volumes = {v["name"]: v for v in node["spec"]["template"]["spec"]["volumes"]}
    assert volumes["pool"]["hostPath"] == {"path": "/mnt/amber", "type": "Directory"}
    base = find(rendered["base"], "DaemonSet", "amber-node", "amber-system")
    assert base is not None
    assert len(volumes) == len(base["spec"]["template"]["spec"]["volumes"])  # merged by name
    config = find(objects, "ConfigMap", "amber-pool", "amber-system")
    assert config is not None
    assert config["data"] == {"default": "dir"}


def test_docs_name_files_that_exist() -> None:
    """Every deploy/ path the docs mention is in the repository."""
    mentioned = set()
    for doc in (REPO / "docs").glob("*.md"):
        mentioned |= set(re.findall(r"\bdeploy/[\w./-]*[\w]", doc.read_text()))
    assert "deploy/base" in mentioned
    assert [p for p in sorted(mentioned) if not (REPO / p).exists()] == []


def test_strict_leaves_the_crd_schemas_unchanged(crd_schemas: Schemas) -> None:
    before = copy.deepcopy(crd_schemas)
    for schema in crd_schemas.values():
        strict(schema)
    assert crd_schemas == before
