"""The order a restore fetches in: the volume's, not the packs' (whose ids are random)."""

from __future__ import annotations

from amber.backup.progress import NullProgress
from amber.backup.repository import Repository
from amber.backup.restorer import RestoreOptions, Restorer
from tests.backup.helpers import CHUNK, backup, random_bytes


def test_requests_follow_the_volume_front_to_back(repo: Repository) -> None:
    data = b"".join(random_bytes(CHUNK, seed) for seed in range(40))
    manifest = repo.load_manifest(backup(repo, data))
    restorer = Restorer(repo, manifest, RestoreOptions(max_request_bytes=2 * CHUNK), NullProgress())
    requests = restorer._requests()
    assert len({r.pack_id for r in requests}) >= 8  # several packs, named by random-looking ids
    first_positions = [min(restorer.uses.first(c) for c, _ in r.chunks) for r in requests]
    assert first_positions == sorted(first_positions)
    assert sum(len(r.chunks) for r in requests) == 40
