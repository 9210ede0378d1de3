"""Generated CSI v1 protocol stubs. Do not edit: regenerate with scripts/gen-proto.sh."""
