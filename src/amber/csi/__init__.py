"""The CSI edge: Amber's gRPC services for Kubernetes (Identity, Controller, Node).

Kubernetes talks to Amber through the Container Storage Interface, CSI spec v1.12.0, over a
unix socket. This package is only that edge; the storage itself lives in `amber.pool`,
`amber.backup` and below, and this package calls them.

How the pieces fit:

- `_proto/` holds the stubs generated from `proto/csi.proto` (regenerate them with
  `scripts/gen-proto.sh`; they are committed so installing Amber needs no protoc).
- One module per CSI service (`identity`, and the controller and node modules). Servicers are
  thin: validate the request -> call the domain -> build the reply. They do not take decisions
  about storage and they never set gRPC status codes themselves.
- `errors` is the one place where `amber.domain.errors` classes become gRPC status codes. A
  servicer method raises domain errors and is decorated with `@rpc_errors()`, giving a per-RPC
  override table where the spec asks for a different code (`{AmberError: FAILED_PRECONDITION}`
  for Probe). Unexpected exceptions
  become INTERNAL with a generic message; the traceback goes to the log.
- `logging` writes one JSON line per RPC (method, object ids, code, duration, message) and
  provides `redact()`: fields marked `csi_secret`, `secrets` maps and map values under keys
  that look sensitive never reach a log or an error message.
- `server.CSIServer` binds the endpoint, runs the servicers on a thread pool behind the logging
  interceptor, and on SIGTERM stops taking calls, lets calls in flight finish within a grace
  period, and removes its socket.
- `controller` and `node` are the Controller and Node services of a node's pool; `driver`
  builds the servicers of a deployment mode (`capabilities` says what each mode announces and
  why) and runs them.
- The servicers share small, pure helpers: `ids` (self-describing IDs, CSI names -> pool
  names), `objects` (IDs -> this node's volumes and snapshots), `access` (volume capabilities),
  `params` (parameters, capacity ranges, topology, paths), `paging` (list tokens), `health`
  (volume condition and usage) and `locks` (per-volume serialization of node RPCs).

The deployment, the ID formats and the error codes a user may see are in docs/csi.md.
"""
