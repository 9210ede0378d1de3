#!/usr/bin/env bash
# Regenerate the Python stubs for the CSI protocol from proto/csi.proto.
#
# The generated files are committed (src/amber/csi/_proto/), so installing Amber never needs
# grpcio-tools; run this script after changing proto/csi.proto and commit what it writes.
#
# Usage: scripts/gen-proto.sh            (uses .venv/bin/python when present)
#        PYTHON=/path/to/python scripts/gen-proto.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "${python}" ]]; then
    if [[ -x "${root}/.venv/bin/python" ]]; then
        python="${root}/.venv/bin/python"
    else
        python="python3"
    fi
fi

out="${root}/src/amber/csi/_proto"
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

# grpc_tools ships the well-known types (descriptor, wrappers, timestamp); point protoc at them.
wkt="$("${python}" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"

"${python}" -m grpc_tools.protoc \
    --proto_path="${root}/proto" \
    --proto_path="${wkt}" \
    --python_out="${tmp}" \
    --pyi_out="${tmp}" \
    --grpc_python_out="${tmp}" \
    "${root}/proto/csi.proto"

# protoc writes `import csi_pb2 as csi__pb2`, which only works with _proto/ on sys.path.
# Make it package-relative so the stubs live inside amber.csi._proto.
sed -i -E 's/^import csi_pb2 as csi__pb2$/from . import csi_pb2 as csi__pb2/' "${tmp}/csi_pb2_grpc.py"
if grep -qE '^import csi_pb2' "${tmp}/csi_pb2_grpc.py"; then
    echo "gen-proto: could not rewrite the csi_pb2 import in csi_pb2_grpc.py" >&2
    exit 1
fi

mkdir -p "${out}"
cat > "${tmp}/__init__.py" <<'PY'
"""Generated CSI v1 protocol stubs. Do not edit: regenerate with scripts/gen-proto.sh."""
PY
for f in __init__.py csi_pb2.py csi_pb2.pyi csi_pb2_grpc.py; do
    install -m 0644 "${tmp}/${f}" "${out}/${f}"
done
echo "gen-proto: wrote ${out}/{__init__.py,csi_pb2.py,csi_pb2.pyi,csi_pb2_grpc.py}"
