#!/usr/bin/env bash
# Install everything Amber needs on Debian 12, as root: system tools from apt, then a virtual
# environment in .venv with the pinned Python dependencies. Safe to run again: it only
# installs what is missing.
#
# Usage: scripts/install.sh [--dev] [--bench]
#   --dev    adds the test and lint tools
#   --bench  adds restic and borg (borgbackup), which bench/ compares Amber with
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dev=0
bench=0
for arg in "$@"; do
    case "${arg}" in
        --dev) dev=1 ;;
        --bench) dev=1; bench=1 ;;
        *) echo "error: unknown option ${arg}" >&2; exit 2 ;;
    esac
done

if [[ "$(id -u)" -ne 0 ]]; then
    echo "error: run as root: Amber formats images, attaches loop devices and mounts filesystems" >&2
    exit 1
fi

# System tools: mkfs/resize for ext4 and xfs, losetup/mount/fsfreeze (util-linux), python venv.
packages=(python3 python3-venv python3-dev xfsprogs e2fsprogs util-linux mount btrfs-progs procps)
# The end-to-end tests run a real Kubernetes control plane, whose store is etcd (3.4 in Debian 12).
[[ ${dev} -eq 1 ]] && packages+=(etcd-server)
# The dashboard tests drive Debian's headless Chromium through its chromedriver (never a
# downloaded browser).
[[ ${dev} -eq 1 ]] && packages+=(chromium chromium-driver)
[[ ${bench} -eq 1 ]] && packages+=(restic borgbackup)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q "install ok installed" || missing+=("${pkg}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
modprobe loop 2>/dev/null || true

# Python 3.11 (Debian 12's python3 is 3.11; a python3.11 earlier on PATH is preferred).
python="$(command -v python3.11 || command -v python3)"
"${python}" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' || {
    echo "error: Amber needs Python 3.11 (found $("${python}" --version))" >&2
    exit 1
}
if [[ ! -x "${root}/.venv/bin/python" ]]; then
    "${python}" -m venv "${root}/.venv"
fi
venv_pip=("${root}/.venv/bin/python" -m pip --disable-pip-version-check -q)
# pip >= 25.1 understands dependency groups (pyproject.toml [dependency-groups]).
"${venv_pip[@]}" install "pip==26.3"
if [[ ${dev} -eq 1 ]]; then
    "${venv_pip[@]}" install -e "${root}" --group "${root}/pyproject.toml:dev"
else
    "${venv_pip[@]}" install -e "${root}"
fi
# An editable install leaves Amber's own modules uncompiled, and with PYTHONDONTWRITEBYTECODE
# set Python would compile all of them on every command (~0.15 s): compile them now, as pip
# does for everything it installs. Python recompiles a module whose source changed.
"${root}/.venv/bin/python" -m compileall -q "${root}/src/amber"
echo "Amber installed: ${root}/.venv/bin/amber"
