"""Object stores that hold backup repositories.

`BlobStore` (in `amber.blobstore.base`) is the one protocol the backup engine sees: named,
immutable objects under a flat key space. Implementations: `FileStore` (a local directory or an
NFS mount) and `S3Store` (any S3-compatible service). Retries, timeouts and fault injection are
wrappers around a `BlobStore`, never inside the engine.
"""
