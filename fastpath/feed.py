"""Following the Redis projection from a fast-path process: initial load, then the change feed.

`ProjectionFeed.load()` reads every live family; `ProjectionFeed.changes(block_ms)` returns the
families swapped since, each as a complete Snapshot. A reader never sees a half-written version:
it only follows the pointer, and the writer swaps the pointer after the last chunk is in. Every chunk is
checked against the snapshot's header (fastpath/snapshot_format) before it is used: SnapshotError, a
ValueError, when something does not match.

A deck is meant to be mapped, not read into rows: `image_chunks()` gives its image's bytes, checked chunk by
chunk, for deck_image.ImageCache to write to its file. `read()` gives rows for any family (a deck's decoded
out of its image by fastpath/reference/image.py), for tools, tests and the small families.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import redis

from fastpath import snapshot_format as fmt
from fastpath.reference import image as image_layout

CHUNKS_PER_READ = 8  # LRANGE in slices: 8 MB of a deck image or 40,000 JSON rows per reply


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
        """One version of a family as rows."""
        header, chunks = self._open(family, version)
        if header.encoding == fmt.DECK_IMAGE:
            _kind, rows = image_layout.decode(b"".join(chunks))
            return Snapshot(family, version, rows)
        where = self._keys.snapshot(family, version)
        rows = [row for chunk in chunks for row in fmt.decode_rows(chunk, where)]
        if len(rows) != header.rows:
            raise fmt.SnapshotError(f"{where}: {len(rows)} rows, the header says {header.rows}")
        return Snapshot(family, version, rows)

    def image_chunks(self, family: str, version: int) -> Iterator[bytes]:
        """A deck version's image, chunk by chunk, each one checked before it is given out."""
        header, chunks = self._open(family, version)
        if header.encoding != fmt.DECK_IMAGE:
            raise fmt.SnapshotError(f"{family} is not a deck")
        yield from chunks

    def _open(self, family: str, version: int) -> tuple[fmt.Header, Iterator[bytes]]:
        key = self._keys.snapshot(family, version)
        first = self._redis.lrange(key, 0, CHUNKS_PER_READ)  # the header and the first chunks: one round trip
        if not first:
            raise SnapshotGone(key)
        header = fmt.Header.decode(first[0], family, key)
        return header, self._checked(key, header, first[1:], CHUNKS_PER_READ)

    def _checked(self, key: str, header: fmt.Header, pending: list[bytes], asked: int) -> Iterator[bytes]:
        """The chunks after the header, checked; `pending` is what the last LRANGE gave of the `asked` it asked."""
        expected, index = len(header.chunks), 0
        while True:
            for data in pending:
                index += 1
                if index > expected:
                    raise fmt.SnapshotError(f"{key}: more chunks than the {expected} its header lists")
                fmt.check_chunk(header, index, data, key)
                yield data
            if len(pending) < asked:  # the LIST ended within this slice
                break
            pending = self._redis.lrange(key, index + 1, index + CHUNKS_PER_READ)
            asked = CHUNKS_PER_READ
        if index < expected:
            if not self._redis.exists(key):
                raise SnapshotGone(key)
            raise fmt.SnapshotError(f"{key}: truncated, {index} of {expected} chunks")

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
