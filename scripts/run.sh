#!/usr/bin/env bash
# The main job on the embedded default: install, create the default loopback pool if it is
# missing (/var/lib/amber/pool.img mounted at /var/lib/amber/pool), walk through the story
# (volume, data, snapshot, change, restore, clone, online expansion — with timings), then serve
# the CSI driver on that pool in the foreground, with the web dashboard on 127.0.0.1:8080
# (Ctrl-C stops both).
#
# Usage (as root): scripts/run.sh [amber demo options, e.g. --keep]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"${root}/scripts/install.sh"
amber="${root}/.venv/bin/amber"
"${amber}" demo "$@"
endpoint="unix:///run/amber/csi.sock"
node="$(hostname)"
dashboard="127.0.0.1:8080"
cat <<MSG

Serving the CSI driver (Identity, Controller, Node) for node '${node}' on ${endpoint}.
From another shell, talk to it as Kubernetes would:
  ${amber} csi info
  ${amber} csi create-volume demo --size 1Gi
  ${amber} csi stage amber:v1:vol:${node}:demo /run/amber/stage/demo
  ${amber} csi publish amber:v1:vol:${node}:demo /run/amber/stage/demo /mnt/demo
The dashboard of this pool and its targets: http://${dashboard}/ (this machine only; from
another one: ssh -L 8080:127.0.0.1:8080 THIS-HOST, then open http://127.0.0.1:8080/).
Ctrl-C (SIGTERM) lets calls in flight finish and removes the socket.

MSG
exec "${amber}" node --node-id "${node}" --endpoint "${endpoint}" --dashboard-address "${dashboard}"
