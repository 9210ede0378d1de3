#!/usr/bin/env bash
# Install Amber for its container image (deploy/image/Dockerfile runs this), or into any prefix:
# the system tools Amber calls (with --system-packages, as root, on Debian 12), then a virtual
# environment at PREFIX holding a regular (non-editable) install of Amber and its pinned
# dependencies, with `amber` linked into BIN_DIR when given.
#
# Usage: deploy/image/install.sh [--system-packages] [--prefix PREFIX] [--link BIN_DIR] [SOURCE]
#   SOURCE   Amber's source tree (default: the repository this script is in)
#   PREFIX   where the virtual environment goes (default /opt/amber)
# Tests run it with a scratch prefix to prove the non-editable install works.
set -euo pipefail

source_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
prefix=/opt/amber
link=""
system=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --system-packages) system=1 ;;
        --prefix) prefix="${2:?--prefix needs a directory}"; shift ;;
        --link) link="${2:?--link needs a directory}"; shift ;;
        -*) echo "error: unknown option $1" >&2; exit 2 ;;
        *) source_dir="$1" ;;
    esac
    shift
done
[[ -f "${source_dir}/pyproject.toml" ]] || {
    echo "error: ${source_dir} is not Amber's source tree (no pyproject.toml)" >&2
    exit 2
}

if [[ ${system} -eq 1 ]]; then
    # mkfs/fsck/resize for ext4 and xfs, btrfs, losetup/mount/wipefs/blkid/fsfreeze
    # (util-linux, mount), pkill/ps (procps), and Python 3.11 with venv.
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        python3 python3-venv ca-certificates \
        xfsprogs e2fsprogs btrfs-progs util-linux mount procps >/dev/null
    rm -rf /var/lib/apt/lists/*
fi

python="$(command -v python3.11 || command -v python3)"
"${python}" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' || {
    echo "error: Amber needs Python 3.11 (found $("${python}" --version))" >&2
    exit 1
}

# Build from a copy, so that the build leaves nothing in the source tree.
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
cp -a "${source_dir}/pyproject.toml" "${source_dir}/README.md" "${source_dir}/src" "${work}/"
find "${work}/src" -name __pycache__ -prune -exec rm -rf {} +

"${python}" -m venv "${prefix}"
pip=("${prefix}/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install "pip==26.3"
"${pip[@]}" install "${work}"
if [[ -n "${link}" ]]; then
    mkdir -p "${link}"
    ln -sf "${prefix}/bin/amber" "${link}/amber"
fi
"${prefix}/bin/amber" --help >/dev/null
echo "Amber installed in ${prefix}"
