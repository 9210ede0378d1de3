#!/usr/bin/env bash
# The main job on the embedded default: install, create the default loopback pool if it is
# missing (/var/lib/amber/pool.img mounted at /var/lib/amber/pool), and walk through the story:
# volume, data, snapshot, change, restore, clone, online expansion — with timings.
#
# Usage (as root): scripts/run.sh [amber demo options, e.g. --keep]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"${root}/scripts/install.sh"
exec "${root}/.venv/bin/amber" demo "$@"
