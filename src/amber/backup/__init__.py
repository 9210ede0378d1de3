"""The backup repository: how Amber stores volume backups in a `BlobStore`.

A volume image is cut into fixed, aligned chunks (256 KiB by default for new repositories). Holes
and all-zero chunks are not stored. Every other chunk is named by a keyed hash of its content (keyed
BLAKE3 under a per-repository key), so equal chunks are stored once across all backups of all
volumes; it is compressed with zstd level 1 when that helps, sealed with AES-256-GCM and appended to
a *pack*. A pack (16 MiB by default) ends with a sealed header that lists its chunks, so the packs
alone describe everything stored. Packs are named by the BLAKE3 hash of their bytes and never
rewritten.

The *index* maps each chunk id to its pack and position; it is written after the packs it
describes and can always be rebuilt from the pack headers. A *manifest* per backup lists, for
each chunk position of the volume, a chunk id or "zero" or "hole", plus the volume's name and
size, the source snapshot, the parent backup and statistics. It is written last: a backup exists
once its manifest does, and then every chunk it needs is in an indexed, existing pack.

```
config                  what the repository is (format version, ids, parameters)
keys/<id>               the master key wrapped by a password or key file (one per credential)
data/<xx>/<blake3>      packs of sealed chunks with a trailing sealed header
index/<blake3>          chunk id -> (pack, offset, length, raw length, flags)
backups/<backup id>     one manifest per backup
locks/<id>              who is using the repository (shared: backup/restore; exclusive: prune)
```

Prune forgets backups by a retention policy and sweeps packs no kept manifest reaches, never
touching young packs or packs a running backup may use. Check verifies the structure and, on
request, every byte. The byte-level format is in `docs/repository-format.md`.

Modules: `crypto` (sealing, subkeys, chunk ids), `keys` (key slots), `config`, `layout` (key
names, clock type), `pack`, `index`, `manifest`, `locks`, `repository` (init/open, reads),
`writer` (one backup), `retention` (pure policy), `gc` (prune), `check`, `handles` (backup
ids, handles and CSI snapshot IDs as people paste them). The package re-exports
nothing: import from the module, so that a command loads only the modules it runs (an
incremental backup's own work is shorter than Python's imports).
"""
