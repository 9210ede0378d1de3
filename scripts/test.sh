#!/usr/bin/env bash
# Install everything (with the test tools) and run Amber's checks and test suite, as root:
# ruff (lint + format check), mypy --strict, import-linter layer contracts, then pytest on the
# real parts (loop devices, XFS reflink, gRPC over unix sockets, moto and SeaweedFS S3 server
# processes) and, when the Kubernetes test binaries of ../shared/k8s are there, the end-to-end
# suite against a real control plane (tests/e2e) and csi-sanity.
#
# Usage (as root): scripts/test.sh [pytest arguments]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"${root}/scripts/install.sh" --dev
cd "${root}"
bin="${root}/.venv/bin"
echo "== ruff"
"${bin}/ruff" check src tests bench
"${bin}/ruff" format --check src tests bench
echo "== mypy --strict"
"${bin}/mypy"
echo "== import-linter"
"${bin}/lint-imports"
# The Kubernetes binaries (kube-apiserver, the CSI sidecars, csi-sanity) are unpacked from
# ../shared/k8s into .k8s/ (idempotent); the tests that need them find them in AMBER_K8S_BIN.
unpack="${root}/../shared/k8s/unpack.sh"
if [[ -n "${AMBER_K8S_BIN:-}" ]]; then
    echo "== kubernetes binaries: ${AMBER_K8S_BIN} (AMBER_K8S_BIN)"
elif [[ -f "${unpack}" ]]; then
    AMBER_K8S_BIN="$(sh "${unpack}" "${root}/.k8s" | tail -n 1)"
    export AMBER_K8S_BIN
    echo "== kubernetes binaries: ${AMBER_K8S_BIN} (unpacked from ${unpack})"
else
    echo "== kubernetes binaries: NOT AVAILABLE (no ${unpack}): the end-to-end tests and" \
        "csi-sanity will be skipped (with CI=true they fail)"
fi
# The suite mostly waits (servers starting, subprocesses, mkfs, the control plane): it runs in
# AMBER_TEST_WORKERS pytest-xdist workers (default 3); a module's tests stay in one worker and
# the end-to-end modules share one (tests/conftest.py). `-n 0` in the arguments runs it serially.
echo "== pytest (${AMBER_TEST_WORKERS:-3} workers)"
exec "${bin}/pytest" -n "${AMBER_TEST_WORKERS:-3}" --dist loadgroup "$@"
