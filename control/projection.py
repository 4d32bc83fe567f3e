"""The Redis projection: what the fast path needs, published as versioned snapshots (fastpath/snapshot_format).

Writers mark families dirty inside their transaction (`mark_dirty`): a change counter in PostgreSQL plus
a NOTIFY delivered at commit. The Publisher thread wakes on the NOTIFY (or every few seconds, to catch
up after Redis or this process was down), rebuilds each family whose counter is ahead of what Redis
holds, writes the new version in chunks (write_snapshot: JSON rows, or for a deck its image, laid out here
once for every node), and swaps the pointer atomically with one script that also announces the version on
the feed stream. Readers never see half a snapshot: they only ever follow the pointer to a complete one.

Two control services on one database: only the leader publishes (control/leader.py), so a deck is laid out
once. Should two publishers still overlap (an old leader that has not yet seen its lock go), they cannot
interleave a snapshot: each writes its own version's key (the version is an INCR), and the swap is a
compare-and-set on the source sequence - a version built from older data, or from the same data as the live
one, is refused and deleted.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

import psycopg
import redis

from callstate.connection import connect
from control.leader import Leadership
from control.metrics import ControlMetrics
from fastpath import snapshot_format as fmt

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "tollgate_projection"
# Per round trip at most this many chunks, or bytes once past them: big decks never hold Redis for long.
_PIPELINE_CHUNKS = 20
_PIPELINE_BYTES = 4 << 20

# family kind -> (query, parameter from the family name?)
_QUERIES = {
    "company": """
        SELECT max_call_seconds, decimals, currency, sip_realm, max_destination_digits, caller_id_fallback,
               min_destination_digits
        FROM company""",
    "accounts": """
        SELECT account_number, type, status, deleted_at IS NOT NULL, extract(epoch FROM expire_at)::bigint,
               account_type, credit_limit, max_concurrent_calls, cps, localization_id, allow_local_calls,
               allow_loss_less_routing, lc_charge_per_min, allow_recording, rate_group_id,
               non_cli_rate_group_id, cli_pool, default_caller_id
        FROM accounts ORDER BY id""",
    "devices": "SELECT username, account, realm, ha1, ha1_sha256, status FROM sip_devices ORDER BY username",
    "ipmaps": "SELECT id, account, cidr::text, tech_prefix, status FROM ip_maps ORDER BY id",
    "dids": "SELECT number, account, provider, status FROM dids ORDER BY number",
    "callerids": "SELECT account, number FROM caller_ids ORDER BY account, number",
    "rategroups": """
        SELECT id, markup_percent, routing_strategy, default_initial_increment, default_increment, trunks, status
        FROM rate_groups ORDER BY id""",
    "trunks": """
        SELECT t.id, t.provider, (a.deleted_at IS NULL AND a.status = 'ACTIVE'), t.gateways,
               t.max_concurrent_calls, t.cps, t.localization_id, t.priority, t.status,
               extract(epoch FROM a.expire_at)::bigint, t.pdd_timeout_seconds, t.pass_diversion, t.pass_privacy,
               t.pass_history_info, t.topology_hiding
        FROM trunks t JOIN accounts a ON a.account_number = t.provider ORDER BY t.id""",
    "localizations": """
        SELECT id, caller_id_inbound, caller_id_outbound, destination, termination_caller_id,
               termination_destination
        FROM localization_profiles ORDER BY id""",
    "odeck": """
        SELECT prefix, connect_fee, included_seconds, rate_per_min, initial_increment, increment, forced_trunks,
               priority
        FROM origination_rates WHERE rate_group_id = %s ORDER BY prefix""",
    "tdeck": """
        SELECT prefix, connect_fee, included_seconds, rate_per_min, initial_increment, increment, strip, prepend,
               priority
        FROM termination_rates WHERE trunk_id = %s ORDER BY prefix""",
}

# KEYS: pointer, sources, feed. ARGV: family, version, source seq, retired ttl, snapshot key prefix.
# Refuses a version built from older data than the live one, or from the same data while that is live (two
# publishers racing: the pointer never goes back, and the same data is never announced twice).
_SWAP = """
local live = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
local seq = tonumber(ARGV[3])
if seq < live or (seq == live and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1) then return 0 end
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'family', ARGV[1], 'version', ARGV[2])
if old then redis.call('EXPIRE', ARGV[5] .. ARGV[1] .. ':' .. old, ARGV[4]) end
return 1
"""


def mark_dirty(conn: psycopg.Connection, *families: str) -> None:
    """Record that these families changed; the publisher sees it when the transaction commits."""
    for family in dict.fromkeys(families):
        conn.execute(
            "INSERT INTO projection_state (family) VALUES (%s)"
            " ON CONFLICT (family) DO UPDATE SET seq = projection_state.seq + 1",
            (family,),
        )
        conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, family))


def _batches(cursor: psycopg.Cursor) -> Iterator[list[tuple]]:
    while rows := cursor.fetchmany(fmt.CHUNK_ROWS):
        yield rows


def write_snapshot(client: redis.Redis, key: str, family: str, batches: Iterable[Sequence[Sequence]]) -> int:
    """Write one version of a family at `key` (fastpath/snapshot_format): its chunks as they are encoded, a few
    per round trip, then its header in front. Returns the number of chunks. Rows the format cannot hold raise
    ValueError naming the row, and leave nothing at `key`."""
    encoder = fmt.Encoder(family)
    pipe = client.pipeline(transaction=False)
    pipe.delete(key)
    count = pending = pending_bytes = 0
    try:
        for chunk in encoder.chunks(batches):
            pipe.rpush(key, chunk)
            count, pending, pending_bytes = count + 1, pending + 1, pending_bytes + len(chunk)
            if pending == _PIPELINE_CHUNKS or pending_bytes >= _PIPELINE_BYTES:
                pipe.execute()
                pending = pending_bytes = 0
        pipe.lpush(key, encoder.header())  # an empty family still has a snapshot: its header
        pipe.execute()
    except BaseException:
        pipe.reset()
        with contextlib.suppress(redis.RedisError):
            client.delete(key)
        raise
    return count


class Publisher:
    """Keeps Redis in step with PostgreSQL; one per control service process."""

    def __init__(self, dsn: str, redis_url: str, interval_seconds: float = 2.0,
                 namespace: str = fmt.DEFAULT_NAMESPACE, metrics: ControlMetrics | None = None,
                 leadership: Leadership | None = None):
        self._dsn = dsn
        self._metrics = metrics
        self._leadership = leadership  # None: always publishes (one service, a bench, a test)
        self._keys = fmt.Keys(namespace)
        self._redis = connect(redis_url, socket_timeout=10)
        self._swap = self._redis.register_script(_SWAP)
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._refused: set[str] = set()  # families whose rows the snapshot format would not take

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Catch Redis up once before serving (when it is reachable), then follow changes in a thread."""
        try:
            self._reconcile_if_leading()
        except (psycopg.Error, redis.RedisError, OSError) as exc:
            self._report_failure(exc)
        self._thread = threading.Thread(target=self._run, name="projection-publisher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as listener:
                    listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._loop(listener)
            except (psycopg.Error, redis.RedisError, OSError) as exc:
                self._report_failure(exc)
                self._stop.wait(self._interval)

    def _loop(self, listener: psycopg.Connection) -> None:
        while not self._stop.is_set():
            self._reconcile_if_leading()
            # Wake on the first NOTIFY, then drain a burst briefly so one publish covers many changes.
            if list(listener.notifies(timeout=self._interval, stop_after=1)):
                list(listener.notifies(timeout=0.02))

    def _report_refused(self, family: str, exc: ValueError) -> None:
        if family not in self._refused:  # once until it publishes again, not every interval
            log.error("projection: cannot publish %s, its live version stays: %s", family, exc)
        self._refused.add(family)

    def _report_failure(self, exc: Exception) -> None:
        if not self._failing:  # once per outage, not once per retry
            log.error("projection publisher cannot reach its stores: %s", exc)
        self._failing = True

    # ------------------------------------------------------------------ publishing
    def _reconcile_if_leading(self) -> None:
        if self._leadership is None or self._leadership.leading:
            self.reconcile()

    def reconcile(self) -> list[str]:
        """Publish every family Redis lags behind; return their names."""
        started = time.monotonic()  # (woken by a change's NOTIFY at its commit, or the periodic check)
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            wanted = dict(conn.execute("SELECT family, seq FROM projection_state").fetchall())
            epoch = conn.execute("SELECT epoch FROM projection_epoch").fetchone()[0]
        if self._redis.get(self._keys.epoch) != epoch.encode():
            # Another (or a recreated) database wrote this projection: its sequence numbers mean nothing here.
            self._redis.delete(self._keys.sources)
            self._redis.set(self._keys.epoch, epoch)
        published = {k.decode(): int(v) for k, v in self._redis.hgetall(self._keys.sources).items()}
        live = {k.decode() for k in self._redis.hkeys(self._keys.pointer)}
        stale = [f for f, seq in wanted.items() if published.get(f, -1) < seq or f not in live]
        for family in sorted(stale):
            try:
                self.publish(family)
            except ValueError as exc:  # rows written around the API; the live version stays, the rest goes on
                self._report_refused(family, exc)
            else:
                self._refused.discard(family)
                if self._metrics:
                    self._metrics.publish_lag.labels(fmt.kind_of(family)).observe(time.monotonic() - started)
        if self._failing:
            log.info("projection publisher recovered")
            self._failing = False
        return stale

    def publish(self, family: str) -> int:
        """Build and swap in a new version of one family; return the version."""
        kind = fmt.kind_of(family)
        params = (family.partition(":")[2],) if kind in ("odeck", "tdeck") else ()
        version = int(self._redis.incr(self._keys.version_seq))
        key = self._keys.snapshot(family, version)
        started = time.monotonic()
        with psycopg.connect(self._dsn) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.transaction():
                row = conn.execute("SELECT seq FROM projection_state WHERE family = %s", (family,)).fetchone()
                seq = row[0] if row else 0
                with conn.cursor(name="projection") as cursor:
                    cursor.execute(_QUERIES[kind], params)
                    chunks = write_snapshot(self._redis, key, family, _batches(cursor))
        swapped = self._swap(
            keys=[self._keys.pointer, self._keys.sources, self._keys.feed],
            args=[family, version, seq, fmt.RETIRED_TTL_SECONDS, self._keys.snapshot_prefix, fmt.FEED_MAXLEN],
        )
        if not swapped:
            self._redis.delete(key)
        log.info("%s %s v%d (%d chunks) in %.3f s", "published" if swapped else "another publisher was ahead: dropped",
                 family, version, chunks, time.monotonic() - started)
        return version

    def close(self) -> None:
        self.stop()
        self._redis.close()
