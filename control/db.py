"""PostgreSQL access: the connection pool and self-applying, idempotent schema migrations."""

from __future__ import annotations

import logging
from importlib import resources

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

# Any constant works; it only serialises migrations when several control services start at once.
_MIGRATION_LOCK = 0x7011_6A7E


def open_pool(dsn: str, max_size: int = 10) -> ConnectionPool:
    pool = ConnectionPool(
        dsn, min_size=1, max_size=max_size, kwargs={"row_factory": dict_row}, open=False, name="tollgate"
    )
    pool.open(wait=True, timeout=30)
    return pool


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
