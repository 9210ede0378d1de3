#!/usr/bin/env bash
# Install everything (with the test tools) and run Amber's checks and test suite, as root:
# ruff (lint + format check), mypy --strict, import-linter layer contracts, then pytest on the
# real parts (loop devices, XFS reflink, gRPC over unix sockets, a moto S3 server process).
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
echo "== pytest"
exec "${bin}/pytest" "$@"
