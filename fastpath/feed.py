"""Following the Redis projection from a fast-path process: initial load, then the change feed.

`ProjectionFeed.load()` reads every live family; `ProjectionFeed.changes(block_ms)` returns the
families swapped since, each as a complete Snapshot. A reader never sees a half-written version:
it only follows the pointer, and the writer swaps the pointer after the last chunk is in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import redis

from fastpath import snapshot_format as fmt

_CHUNKS_PER_READ = 20  # LRANGE in slices: a 1M-row deck never arrives as one huge reply


@dataclass(frozen=True)
class Snapshot:
    family: str
    version: int
    rows: list[list]

    def records(self) -> Iterator[dict]:
        """Rows as dicts keyed by the family's columns (for tests and tools, not the hot path)."""
        columns = fmt.COLUMNS[fmt.kind_of(self.family)]
        for row in self.rows:
            yield dict(zip(columns, row, strict=True))


class SnapshotGone(Exception):
    """The version was retired before it could be read: read the pointer again."""


class ProjectionFeed:
    def __init__(self, client: redis.Redis, namespace: str = fmt.DEFAULT_NAMESPACE):
        self._redis = client
        self._keys = fmt.Keys(namespace)
        self._last_id = b"0-0"

    def live_versions(self) -> dict[str, int]:
        """family -> live version. The feed position is taken first, so no swap after it is missed."""
        newest = self._redis.xrevrange(self._keys.feed, count=1)
        self._last_id = newest[0][0] if newest else b"0-0"
        return {f.decode(): int(v) for f, v in self._redis.hgetall(self._keys.pointer).items()}

    def load(self) -> dict[str, Snapshot]:
        """Every live family, read whole."""
        return {family: self.read(family, version) for family, version in self.live_versions().items()}

    def read(self, family: str, version: int) -> Snapshot:
        key = self._keys.snapshot(family, version)
        rows: list[list] = []
        start = 0
        while True:
            chunks = self._redis.lrange(key, start, start + _CHUNKS_PER_READ - 1)
            if not chunks:
                if start == 0:
                    raise SnapshotGone(key)
                break
            for chunk in chunks:
                rows.extend(fmt.decode_chunk(chunk))
            start += len(chunks)
        return Snapshot(family, version, rows)

    def announcements(self, block_ms: int | None = None) -> dict[str, int]:
        """family -> newest announced version since the last call; waits up to block_ms (None: not at all)."""
        reply = self._redis.xread({self._keys.feed: self._last_id}, block=block_ms)
        newest: dict[str, int] = {}
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                self._last_id = entry_id
                newest[fields[b"family"].decode()] = int(fields[b"version"])
        return newest

    def changes(self, block_ms: int | None = 1000) -> list[Snapshot]:
        """Wait up to block_ms for swaps; return the newest version of each family that changed, read whole."""
        snapshots = []
        for family, version in self.announcements(block_ms).items():
            try:
                snapshots.append(self.read(family, version))
            except SnapshotGone:  # superseded while we were away: take whatever is live now
                live = self._redis.hget(self._keys.pointer, family)
                if live is not None:
                    snapshots.append(self.read(family, int(live)))
        return snapshots
