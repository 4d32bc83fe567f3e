"""The fast path as a Kamailio process runs it: load the projection, follow it, decide calls.

Each process keeps a World and an Engine built from it. Small families are read from Redis into the
process; a deck's image is streamed from Redis into a file that every process of the node maps
(deck_image.ImageCache), written once per node by whichever process gets there first. refresh() polls the
change feed without blocking at most every `poll_seconds`, so a change reaches every process within that
delay plus its next call. When Redis is unreachable, or a snapshot is refused (a format this process does
not read, a chunk that does not match its digest: snapshot_format.SnapshotError), the last good data keeps
serving (fail-static) and the error is logged once per outage; on recovery the process resyncs with the
live versions, in case announcements were missed.
"""

from __future__ import annotations

import logging
import os
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from callstate.connection import AnyRedis, connect
from fastpath import engine_class
from fastpath import snapshot_format as fmt
from fastpath.deck_image import ImageCache
from fastpath.feed import ProjectionFeed, SnapshotGone
from fastpath.model import World

log = logging.getLogger(__name__)
# While Redis is unreachable, poll this much less often: a Kamailio worker must not stall on it.
OUTAGE_POLL_SECONDS = 1.0
# Besides the feed, compare with the live versions this often: a process idle past the feed's trimming,
# or one whose first load failed, catches up without relying on announcements it never saw.
RESYNC_SECONDS = 30.0


def redis_client(url: str) -> AnyRedis:
    """A client fit for a call's path: short timeouts and no retries, so an outage costs milliseconds. A
    redis+cluster:// URL gives a Redis Cluster client (callstate.connection)."""
    return connect(url, socket_connect_timeout=0.1, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))


class FastPath:
    def __init__(self, client: AnyRedis, image_directory: str, namespace: str = fmt.DEFAULT_NAMESPACE,
                 poll_seconds: float = 0.25):
        self._feed = ProjectionFeed(client, namespace)
        # One image directory per projection: two stacks' decks of the same name must not share files.
        self._images = ImageCache(os.path.join(image_directory, namespace))
        self._poll_seconds = poll_seconds
        self._engine_class = engine_class()
        self.world = World()
        self.engine = self._engine_class(self.world)
        self.versions: dict[str, int] = {}
        self.synced_at = 0.0  # time.time() of the last successful look at Redis (a load, or a poll of the feed)
        self._next_poll = 0.0
        self._next_resync = 0.0
        self._failing = True  # until the first load succeeds

    # ------------------------------------------------------------------ following the projection
    @property
    def loaded(self) -> bool:
        """Whether a first load has succeeded (before it, there is nothing to decide with)."""
        return bool(self.versions)

    @property
    def version(self) -> int:
        """The newest family version this process serves: versions are drawn from one counter, so the highest
        says how recent its projection is (0 before the first load)."""
        return max(self.versions.values(), default=0)

    def load(self) -> None:
        """Read every live family whose version differs from ours. Raises when Redis is unreachable."""
        live = self._feed.live_versions()
        self._apply({f: v for f, v in live.items() if self.versions.get(f) != v})
        self._failing = False
        self._next_resync = time.monotonic() + RESYNC_SECONDS
        self.synced_at = time.time()

    def refresh(self) -> bool:
        """Apply announced changes when a poll is due; True when the engine changed. Never raises."""
        now = time.monotonic()
        if now < self._next_poll:
            return False
        self._next_poll = now + self._poll_seconds
        try:
            if self._failing or now >= self._next_resync:
                return self._recover()
            changed = self._apply(self._feed.announcements(block_ms=None))
            self.synced_at = time.time()
            return changed
        except (redis.RedisError, OSError, ValueError, SnapshotGone) as exc:  # SnapshotGone: a version retired
            # while we read it (the next poll takes the new one)
            self._fail(exc)
            self._next_poll = now + max(self._poll_seconds, OUTAGE_POLL_SECONDS)
            return False

    def _fail(self, exc: Exception) -> None:
        if not self._failing:  # once per outage, not once per poll
            if isinstance(exc, ValueError):  # a snapshot refused (SnapshotError) or an image that will not open
                log.error("fast path: refused a snapshot, serving the last good data: %s", exc)
            else:
                log.error("fast path: projection unreachable, serving the last good data: %s", exc)
        self._failing = True

    def _recover(self) -> bool:
        versions_before, was_failing = dict(self.versions), self._failing
        self.load()
        if was_failing and versions_before:
            log.warning("fast path: projection reachable again, resynced")
        return self.versions != versions_before

    def _apply(self, versions: dict[str, int]) -> bool:
        # "Different", not "newer": after Redis lost everything, versions start again from 1.
        fresh = {f: v for f, v in versions.items() if v != self.versions.get(f)}
        for family, version in sorted(fresh.items(), key=lambda item: fmt.kind_of(item[0]) in fmt.DECK_KINDS):
            kind = fmt.kind_of(family)
            if kind in fmt.DECK_KINDS:
                image = self._images.get(family, version, kind,
                                         lambda f=family, v=version: self._feed.image_chunks(f, v))
                self.world.set_deck(family, image)
            elif kind in fmt.COLUMNS:
                self.world.apply(self._feed.read(family, version))
            self.versions[family] = version
        if fresh:
            self.engine = self._engine_class(self.world)
        return bool(fresh)

    # ------------------------------------------------------------------ per call
    def decide(self, account: str, caller_id: str, destination: str, available: int, now: int, entropy: int = 0):
        self.refresh()
        return self.engine.decide(account, caller_id, destination, available, now, entropy)
