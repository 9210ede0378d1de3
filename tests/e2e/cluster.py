"""A real Kubernetes control plane on 127.0.0.1, and Amber deployed on it the way deploy/ says.

`ControlPlane` runs etcd, kube-apiserver (self-made certificates, a static admin token, RBAC),
kube-controller-manager (PV binder, expander, protection controllers) and snapshot-controller
(`--enable-distributed-snapshotting`) on free ports, with data in a temporary directory.

`deploy_amber` applies deploy/base's namespace, ServiceAccounts and RBAC, CSIDriver and classes,
makes the Node and CSINode objects a kubelet would, and starts per node `amber node` with
csi-provisioner and csi-snapshotter, and once `amber controller` with csi-resizer. The sidecars
take their flags from deploy/base/node.yaml and controller.yaml (only the socket, the missing
owner pod and leader election are adapted), and run as the ServiceAccounts of deploy/ with
tokens from the TokenRequest API: a rule missing from the RBAC fails the suite.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.s3_server import free_port
from tests.e2e.kube import ApiError, Kube, Obj, until, write_kubeconfig
from tests.e2e.pki import Pki, make_pki

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "base"
CRDS = REPO.parent / "shared" / "k8s" / "crd"
DRIVER = "amber.csi.dev"
TOPOLOGY_KEY = "topology.amber.csi.dev/node"
NAMESPACE = "amber-system"
TIME_SCALE = 60
"""The recurring-job clock of the nodes: one real second is one scheduler minute."""
CONTROLLERS = ",".join(
    f"{name}-controller"
    for name in (
        "persistentvolume-binder",
        "persistentvolume-expander",
        "persistentvolume-protection",
        "persistentvolumeclaim-protection",
        "garbage-collector",
        "namespace",
        "serviceaccount",
    )
)


@dataclass
class Processes:
    """Every process the harness started, each with its log file; stopped in reverse order."""

    logs: Path
    running: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Path:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=REPO,
                start_new_session=True,
            )
        self.running.append((name, proc))
        return log

    def check(self) -> None:
        """Fail at once, with its log, when a started process died."""
        for name, proc in self.running:
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self, name: str) -> None:
        for entry in [e for e in self.running if e[0] == name]:
            _terminate(entry[1])
            self.running.remove(entry)

    def stop_all(self) -> None:
        while self.running:
            _, proc = self.running.pop()
            _terminate(proc)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class ControlPlane:
    bin: Path
    work: Path
    procs: Processes
    pki: Pki
    server: str = ""
    admin: Kube | None = None

    @property
    def kube(self) -> Kube:
        assert self.admin is not None
        return self.admin

    def start(self) -> None:
        etcd = self._start_etcd()
        token = secrets.token_hex(16)
        tokens = self.work / "tokens.csv"
        tokens.write_text(f'{token},e2e-admin,e2e-admin,"system:masters"\n')
        tokens.chmod(0o600)
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        self.procs.start("kube-apiserver", self._apiserver_command(etcd, port, tokens))
        config = write_kubeconfig(
            self.work / "admin.kubeconfig", self.server, self.pki.ca_cert, token, "e2e-admin"
        )
        self.admin = Kube(self.server, self.pki.ca_cert, token, self.bin / "kubectl", config)
        until("the API server to answer /readyz", self._ready, timeout=90, interval=0.3)
        self.procs.start("kube-controller-manager", self._kcm_command(config))
        for crd in sorted(CRDS.glob("*.yaml")):
            self.kube.kubectl("apply", "--server-side", "-f", str(crd))
        until("the snapshot CRDs", self._crds_established, timeout=60)
        self.procs.start(
            "snapshot-controller",
            [
                str(self.bin / "snapshot-controller"),
                f"--kubeconfig={config}",
                "--enable-distributed-snapshotting",
                "--feature-gates=CSIVolumeGroupSnapshot=true",
                "--leader-election=false",
                "--v=3",
            ],
        )

    def _start_etcd(self) -> str:
        client, peer = free_port(), free_port()
        url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        self.procs.start(
            "etcd",
            [
                "etcd",
                "--name=e2e",
                f"--data-dir={self.work / 'etcd'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=e2e={peer_url}",
                "--log-level=warn",
            ],
        )
        return url

    def _apiserver_command(self, etcd: str, port: int, tokens: Path) -> list[str]:
        return [
            str(self.bin / "kube-apiserver"),
            f"--etcd-servers={etcd}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.work / 'apiserver-certs'}",
            f"--tls-cert-file={self.pki.server_cert}",
            f"--tls-private-key-file={self.pki.server_key}",
            f"--client-ca-file={self.pki.ca_cert}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={self.pki.sa_pub}",
            f"--service-account-signing-key-file={self.pki.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--api-audiences=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            "--v=1",
        ]

    def _kcm_command(self, config: Path) -> list[str]:
        return [
            str(self.bin / "kube-controller-manager"),
            f"--kubeconfig={config}",
            f"--authentication-kubeconfig={config}",
            f"--authorization-kubeconfig={config}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            f"--controllers={CONTROLLERS}",
            f"--service-account-private-key-file={self.pki.sa_key}",
            f"--root-ca-file={self.pki.ca_cert}",
            "--profiling=false",
            "--v=2",
        ]

    def _ready(self) -> bool:
        self.procs.check()
        try:
            return self.kube.raw("GET", "/readyz") == b"ok"
        except (OSError, ApiError):
            return False

    def _crds_established(self) -> bool:
        try:
            self.kube.request("GET", "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses")
        except (OSError, ApiError):
            return False
        return True

    def recurring_jobs_served(self) -> bool:
        try:
            self.kube.request("GET", "/apis/amber.csi.dev/v1alpha1/recurringjobs")
        except (OSError, ApiError):
            return False
        return True

    def token_kubeconfig(self, service_account: str, namespace: str = NAMESPACE) -> Path:
        """A kubeconfig with a TokenRequest token of the ServiceAccount (valid for 2 hours)."""
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"}
        body["spec"] = {"expirationSeconds": 7200}  # type: ignore[assignment]
        token = self.kube.request("POST", path, body)["status"]["token"]
        name = f"{namespace}-{service_account}.kubeconfig"
        return write_kubeconfig(
            self.work / name, self.server, self.pki.ca_cert, token, service_account
        )


@contextlib.contextmanager
def control_plane(bin_dir: Path, work: Path) -> Iterator[ControlPlane]:
    logs = work / "logs"
    logs.mkdir(parents=True)
    procs = Processes(logs)
    plane = ControlPlane(bin_dir, work, procs, make_pki(work))
    try:
        plane.start()
        yield plane
    finally:
        procs.stop_all()


# -- Amber on the control plane -------------------------------------------------------------


def deploy_documents(name: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def _container(workload: str, container: str) -> Obj:
    for doc in deploy_documents(workload):
        if doc["kind"] in ("DaemonSet", "Deployment"):
            for item in doc["spec"]["template"]["spec"]["containers"]:
                if item["name"] == container:
                    result: Obj = item
                    return result
    raise AssertionError(f"no container {container} in deploy/base/{workload}")


def sidecar_args(
    workload: str, container: str, socket_path: Path, env: dict[str, str]
) -> list[str]:
    """The container's args from deploy/base, for a process beside Amber's socket on this host:
    the socket path replaced, `$(VAR)` expanded from `env`, and the flags that need a pod
    (capacity owner, leader election) adapted."""
    args: list[str] = []
    for arg in _container(workload, container).get("args", []):
        text = str(arg)
        for var, value in env.items():
            text = text.replace(f"$({var})", value)
        if text.startswith("--csi-address="):
            text = f"--csi-address={socket_path}"
        elif text.startswith("--capacity-ownerref-level="):
            text = "--capacity-ownerref-level=-1"  # no DaemonSet pod to own the capacities
        args.append(text)
    return args


def node_objects(node: str) -> list[Obj]:
    """What the kubelet and node-driver-registrar would create: the Node, labelled with its
    topology segment, and its CSINode naming Amber's topology key."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node,
                "labels": {"kubernetes.io/hostname": node, TOPOLOGY_KEY: node},
            },
        },
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "CSINode",
            "metadata": {"name": node},
            "spec": {"drivers": [{"name": DRIVER, "nodeID": node, "topologyKeys": [TOPOLOGY_KEY]}]},
        },
    ]


def wait_socket(procs: Processes, path: Path) -> None:
    def answers() -> bool:
        procs.check()
        return path.exists()

    until(f"the socket {path}", answers, timeout=60, interval=0.1)


def rbac_documents() -> list[Any]:
    return [*deploy_documents("rbac-node.yaml"), *deploy_documents("rbac-controller.yaml")]


@dataclass
class AmberNode:
    name: str
    pool: Path
    socket: Path


@dataclass
class Cluster:
    """The control plane with Amber deployed on two nodes and a controller."""

    plane: ControlPlane
    nodes: dict[str, AmberNode]
    targets: Path
    """The nodes' targets file (target `default` on the S3 server)."""

    @property
    def kube(self) -> Kube:
        return self.plane.kube


def start_amber_node(plane: ControlPlane, node: str, pool: Path, targets: Path) -> AmberNode:
    """`amber node --recurring-jobs` on the pool (its operator as ServiceAccount amber-node,
    its scheduler's clock 60 times faster: a second is a minute), then its csi-provisioner and
    csi-snapshotter (node mode) as ServiceAccount amber-node."""
    rundir = plane.work / "csi" / node
    rundir.mkdir(parents=True)
    sock = rundir / "csi.sock"
    config = plane.token_kubeconfig("amber-node")
    plane.procs.start(
        f"amber-node-{node}",
        [
            sys.executable, "-m", "amber", "--pool", str(pool), "node",
            f"--endpoint=unix://{sock}", f"--node-id={node}", f"--targets-config={targets}",
            "--grace=10", "--upload-retry=0.5", "--recurring-jobs", f"--kubeconfig={config}",
        ],
        env={"AMBER_JOBS_TIME_SCALE": str(TIME_SCALE)},
    )  # fmt: skip
    wait_socket(plane.procs, sock)
    plane.kube.apply(node_objects(node))
    env = {"NODE_NAME": node, "NAMESPACE": NAMESPACE, "POD_NAME": f"amber-node-{node}"}
    for sidecar in ("csi-provisioner", "csi-snapshotter"):
        args = sidecar_args("node.yaml", sidecar, sock, env)
        plane.procs.start(
            f"{sidecar}-{node}",
            [str(plane.bin / sidecar), f"--kubeconfig={config}", "--v=4", *args],
            env=env,
        )
    return AmberNode(node, pool, sock)


def start_amber_controller(plane: ControlPlane, targets: Path) -> None:
    """`amber controller --recurring-jobs` (its operator as ServiceAccount amber-controller,
    on the nodes' targets file, the fast clock) and csi-resizer (leader election on) as
    ServiceAccount amber-controller."""
    rundir = plane.work / "csi" / "controller"
    rundir.mkdir(parents=True)
    sock = rundir / "csi.sock"
    config = plane.token_kubeconfig("amber-controller")
    plane.procs.start(
        "amber-controller",
        [sys.executable, "-m", "amber", "controller",
         f"--endpoint=unix://{sock}", "--grace=10", "--recurring-jobs", f"--kubeconfig={config}",
         f"--targets-config={targets}", f"--state-dir={rundir / 'state'}"],
        env={"AMBER_JOBS_TIME_SCALE": str(TIME_SCALE)},
    )  # fmt: skip
    wait_socket(plane.procs, sock)
    env = {"NAMESPACE": NAMESPACE}
    args = sidecar_args("controller.yaml", "csi-resizer", sock, env)
    plane.procs.start(
        "csi-resizer",
        [str(plane.bin / "csi-resizer"), f"--kubeconfig={config}", "--v=4", *args],
        env=env,
    )


def deploy_amber(plane: ControlPlane, pools: dict[str, Path], targets: Path) -> Cluster:
    """deploy/base's cluster-wide objects, then Amber's processes beside the sidecars."""
    kube = plane.kube
    kube.apply([*deploy_documents("namespace.yaml"), *rbac_documents()])
    kube.apply(deploy_documents("crd-recurringjob.yaml"))
    until("the RecurringJob CRD", plane.recurring_jobs_served, timeout=60)
    kube.apply(
        [
            *deploy_documents("csidriver.yaml"),
            *deploy_documents("storageclasses.yaml"),
            *deploy_documents("snapshotclasses.yaml"),
            *deploy_documents("groupsnapshotclasses.yaml"),
        ]
    )
    nodes = {name: start_amber_node(plane, name, pool, targets) for name, pool in pools.items()}
    start_amber_controller(plane, targets)
    return Cluster(plane, nodes, targets)
