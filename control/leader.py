"""Leadership among control services sharing one PostgreSQL: the jobs whose work must not run twice at once.

Any number of control services may serve RPCs on one database and one Redis namespace. The background jobs
that move money or write the projection - the billing loop (restore, payments pushed, reaper, ledger,
invoices) and the projection publisher - run on one of them at a time: the one holding a PostgreSQL advisory
lock on a connection of its own. The others try to take it every `poll_seconds`.

PostgreSQL frees the lock when that session ends: at once when the leader's process dies (its kernel closes
the socket), after the TCP keepalives below when its host vanishes or is cut off. So a follower takes over
within `poll_seconds` of a killed leader, within about KEEPALIVE_SECONDS + `poll_seconds` of a lost host.

A leader that lost its lock without knowing yet (its session killed, a partition) could overlap a new one for
a moment: `fence(conn)` lets a job check, inside its own transaction, that this process's lock session still
holds the lock, so that the ledger never commits a batch then (every job is idempotent besides).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from psycopg.rows import tuple_row

log = logging.getLogger("tollgate.leader")

# pg_try_advisory_lock(int, int): shown in pg_locks as classid, objid (objsubid 2). The migrations' lock is a
# bigint (objsubid 1): no clash.
LOCK = (0x7011_6A7E, 2)
# The lock session's keepalives, both ways: PostgreSQL ends the session of a vanished host after 5 + 3 x 2 s,
# and this side gives up on a vanished server as soon (tcp_user_timeout: unacknowledged writes).
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
               "tcp_user_timeout": 11_000, "connect_timeout": 5,
               "options": "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"}
KEEPALIVE_SECONDS = 11
_HOLDS = """
SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = l.database
               WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 2
                 AND l.pid = %s AND d.datname = current_database())
"""


class NotLeader(Exception):
    """This service no longer holds the leader lock: the job's work is left to the new leader."""


class Leadership:
    def __init__(self, dsn: str, poll_seconds: float = 1.0, on_change: Callable[[bool], None] | None = None):
        self._dsn = dsn
        self._poll = poll_seconds
        self._on_change = on_change
        self._pid: int | None = None  # the lock session's backend pid while this service leads
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._first = threading.Event()  # the first attempt is done
        self._thread: threading.Thread | None = None
        self._failing = False

    @property
    def leading(self) -> bool:
        return self._pid is not None

    def start(self) -> None:
        """Try once before returning (a lone service leads from its first moment), then keep trying."""
        self._thread = threading.Thread(target=self._run, name="leader", daemon=True)
        self._thread.start()
        self._first.wait(10)

    def stop(self) -> None:
        """Let go of the lock (closing its session), so that a follower takes over at its next poll."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def fence(self, conn: psycopg.Connection) -> None:
        """Raise NotLeader unless this service's lock session still holds the lock (checked in `conn`'s
        transaction: a batch committed after the check was the leader's)."""
        pid = self._pid
        if pid is None:
            raise NotLeader("this control service does not hold the leader lock")
        with conn.cursor(row_factory=tuple_row) as cursor:
            held = cursor.execute(_HOLDS, (*LOCK, pid)).fetchone()[0]
        if not held:
            raise NotLeader("the leader lock's session is gone")

    # ------------------------------------------------------------------ the lock's session
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, application_name="tollgate-leader",
                                     **_KEEPALIVES) as conn:
                    self._hold(conn)
            except (psycopg.Error, OSError) as exc:
                if not self._failing:  # once per outage
                    log.error("leader lock: cannot reach PostgreSQL: %s", exc)
                self._failing = True
            self._set(None, "stopping" if self._stop.is_set() else "its lock session ended")
            self._first.set()
            self._stop.wait(self._poll)

    def _hold(self, conn: psycopg.Connection) -> None:
        """Take the lock when it is free; while held, touch the session each poll (a dead one raises)."""
        self._failing = False
        while not self._stop.is_set():
            if self._pid is None:
                if conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK).fetchone()[0]:
                    self._set(conn.info.backend_pid, "it holds the leader lock")
            else:
                conn.execute("SELECT 1")
            self._first.set()
            self._stop.wait(self._poll)

    def _set(self, pid: int | None, why: str) -> None:
        with self._lock:
            was, self._pid = self._pid is not None, pid
        if was == (pid is not None):
            return
        if pid is not None:
            log.info("became leader: %s; this service runs the billing jobs and the projection publisher", why)
        else:
            log.warning("no longer leader: %s; the billing jobs and the publisher stop here", why)
        if self._on_change is not None:
            self._on_change(pid is not None)
