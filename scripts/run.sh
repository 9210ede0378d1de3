#!/usr/bin/env bash
# The main job on the embedded default: install, create the default loopback pool if it is
# missing (/var/lib/amber/pool.img mounted at /var/lib/amber/pool), walk through the story
# (volume, data, snapshot, change, restore, clone, online expansion — with timings), then serve
# the CSI driver on that pool in the foreground (Ctrl-C stops it).
#
# Usage (as root): scripts/run.sh [amber demo options, e.g. --keep]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"${root}/scripts/install.sh"
amber="${root}/.venv/bin/amber"
"${amber}" demo "$@"
endpoint="unix:///run/amber/csi.sock"
node="$(hostname)"
cat <<MSG

Serving the CSI driver (Identity, Controller, Node) for node '${node}' on ${endpoint}.
From another shell, talk to it as Kubernetes would:
  ${amber} csi info
  ${amber} csi create-volume demo --size 1Gi
  ${amber} csi stage amber:v1:vol:${node}:demo /run/amber/stage/demo
  ${amber} csi publish amber:v1:vol:${node}:demo /run/amber/stage/demo /mnt/demo
Ctrl-C (SIGTERM) lets calls in flight finish and removes the socket.

MSG
exec "${amber}" node --node-id "${node}" --endpoint "${endpoint}"
