"""PostgreSQL access: the connection pool, each RPC's session on it, and self-applying, idempotent migrations.

Every statement an RPC runs has a time limit: the service's `statement_timeout_seconds` (the long one for
exports, deck imports and invoicing), or the client's deadline when that comes sooner. When the client
cancels or its deadline passes, the running statement is cancelled at once rather than left to finish for
nobody: four abandoned 20,000-term filters used to keep both cores busy for a minute.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from importlib import resources

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from control.api import calls, errors

log = logging.getLogger(__name__)

# Any constant works; it only serialises migrations when several control services start at once.
_MIGRATION_LOCK = 0x7011_6A7E


APPLICATION_NAME = "tollgate-control"
_POOL_WAIT_SECONDS = 10.0  # the longest an RPC waits for a free connection


def open_pool(dsn: str, max_size: int = 10, statement_timeout: float = 10.0) -> ConnectionPool:
    # The pool's own default limit covers the few statements run outside an RPC session (the health check).
    options = f"-c statement_timeout={int(statement_timeout * 1000)}"
    pool = ConnectionPool(
        dsn, min_size=1, max_size=max_size, open=False, name="tollgate",
        kwargs={"row_factory": dict_row, "application_name": APPLICATION_NAME, "options": options},
    )
    pool.open(wait=True, timeout=30)
    return pool


class _Canceller:
    """Cancels the connection's running statement when the RPC ends early; inert once the RPC gave it back."""

    def __init__(self, conn: psycopg.Connection):
        self._conn = conn
        self._lock = threading.Lock()
        self._live = True

    def __call__(self) -> None:  # gRPC calls this when the RPC terminates, from one of its own threads
        with self._lock:
            if self._live:
                try:
                    self._conn.cancel_safe(timeout=5)
                except (psycopg.Error, OSError):
                    log.warning("could not cancel the statement of an abandoned RPC")

    def close(self) -> None:
        with self._lock:
            self._live = False


class Database:
    """The pool, as RPCs use it: `with db.transaction() as conn:` or, for several transactions, `connection()`."""

    def __init__(self, pool: ConnectionPool, statement_timeout: float = 10.0, long_statement_timeout: float = 600.0):
        self.pool = pool
        self._short = statement_timeout
        self._long = long_statement_timeout

    def _limit(self, long: bool) -> float:
        limit = self._long if long else self._short
        call = calls.current()
        remaining = call.time_remaining() if call is not None else None
        if remaining is not None:
            limit = min(limit, remaining)
        if limit <= 0.001:
            raise errors.deadline_exceeded("the call's deadline passed before the database was asked")
        return limit

    @contextmanager
    def connection(self, long: bool = False) -> Iterator[psycopg.Connection]:
        """A pooled connection whose statements stop at this RPC's limit, or when its client goes away."""
        limit = self._limit(long)
        with ExitStack() as stack:
            try:
                conn = stack.enter_context(self.pool.connection(timeout=min(limit, _POOL_WAIT_SECONDS)))
            except PoolTimeout:
                raise errors.unavailable("no database connection free; retry shortly") from None
            canceller = _Canceller(conn)
            stack.callback(canceller.close)  # runs before the connection goes back to the pool
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{max(1, int(limit * 1000))}ms",))
            conn.commit()
            call = calls.current()
            if call is not None and call.context is not None and not call.context.add_callback(canceller):
                raise errors.cancelled("the client went away")
            yield conn

    @contextmanager
    def transaction(self, long: bool = False) -> Iterator[psycopg.Connection]:
        """One transaction on a connection of connection(): committed at the end, rolled back on an error."""
        with self.connection(long) as conn, conn.transaction():
            yield conn


def _migration_files() -> list[tuple[str, str]]:
    folder = resources.files("control") / "migrations"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (folder / name).read_text()) for name in names]


def migrate(dsn: str) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction; return their names."""
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
            for name, sql in _migration_files():
                if name in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
                log.info("applied migration %s", name)
                applied_now.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now
