"""Login throttling (SPEC §11): failed attempts counted per login name and per client address.

After `free` failures each further failure locks the key for 1, 2, 4 … seconds; at `max` failures the lock
lasts `lock_seconds`. A locked key is refused (RESOURCE_EXHAUSTED with RetryInfo) without checking a
password, so a brute force gets a handful of guesses per lock period. Login names are counted whether or not
they exist, so the throttle says nothing about which do. A success clears its login's count, never its
source's: one valid account must not let a guesser reset the count of its address. Failures older than
`lock_seconds` are forgotten; housekeeping deletes such rows. Operators see and clear the counts through
OperatorService.ListLoginLocks and ClearLoginLock.

Each service also remembers the locks it has seen for a few seconds, so that a flood against a locked key is
refused without a database round trip (at 300 refusals a second, those round trips were what the rest of the
service waited for). A lock cleared on another control service is therefore honoured here for at most
CACHE_SECONDS longer.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg

from control.api import errors

if TYPE_CHECKING:
    from control.metrics import ControlMetrics

KINDS = ("login", "source")
MAX_KEY_LENGTH = 320  # the longest email address
CACHE_SECONDS = 5.0
_CACHE_ENTRIES = 10_000


@dataclass(frozen=True)
class Policy:
    free: int  # failures without delay
    max: int  # failures that lock for lock_seconds
    lock_seconds: int

    def lock_for(self, failures: int) -> int:
        """Seconds the key is locked after its `failures`-th failure (0 = not locked)."""
        if failures >= self.max:
            return self.lock_seconds
        if failures > self.free:
            return min(2 ** (failures - self.free - 1), self.lock_seconds)
        return 0


_FAILED = """
INSERT INTO login_throttle AS t (kind, key, failures, last_failure_at) VALUES (%(kind)s, %(key)s, 1, now())
ON CONFLICT (kind, key) DO UPDATE SET
    failures = CASE WHEN t.last_failure_at < now() - make_interval(secs => %(window)s) THEN 1
                    ELSE t.failures + 1 END,
    last_failure_at = now()
RETURNING failures
"""


def login_key(login: str) -> str:
    return login.strip().lower()[:MAX_KEY_LENGTH]


class LoginThrottle:
    def __init__(self, login: Policy, source: Policy, metrics: ControlMetrics | None = None):
        self._policies = {"login": login, "source": source}
        self._metrics = metrics
        self._seen: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (remember until, locked until)
        self._guard = threading.Lock()

    def _remember(self, kind: str, key: str, wait: float) -> None:
        now = time.monotonic()
        with self._guard:
            if len(self._seen) > _CACHE_ENTRIES:  # a flood of distinct keys: drop what is over
                self._seen = {k: v for k, v in self._seen.items() if v[0] > now}
            self._seen[(kind, key)] = (now + min(wait, CACHE_SECONDS), now + wait)

    def refuse_if_known(self, keys: dict[str, str]) -> None:
        """Refuse at once when this service saw one of the keys locked a moment ago (no database round trip)."""
        now = time.monotonic()
        with self._guard:
            seen = [self._seen[item] for item in keys.items() if item in self._seen]
        waits = [until - now for remember, until in seen if remember > now]
        if waits:
            self._refuse(max(waits))

    def forget(self, kind: str, key: str) -> None:
        with self._guard:
            self._seen.pop((kind, key), None)

    def check(self, conn: psycopg.Connection, keys: dict[str, str]) -> None:
        """Refuse at once when any of the keys ({kind: key}) is locked now."""
        self.refuse_if_known(keys)
        rows = conn.execute(
            "SELECT kind, key, extract(epoch FROM locked_until - now())::float AS wait FROM login_throttle"
            " WHERE (kind, key) IN ((%s, %s), (%s, %s)) AND locked_until > now()",
            (*_pair(keys, "login"), *_pair(keys, "source")),
        ).fetchall()
        for row in rows:
            self._remember(row["kind"], row["key"], row["wait"])
        if rows:
            self._refuse(max(row["wait"] for row in rows))

    def _refuse(self, wait: float) -> None:
        if self._metrics:
            self._metrics.login_locked.inc()
        _refuse(wait)

    def failed(self, conn: psycopg.Connection, keys: dict[str, str]) -> None:
        if self._metrics:
            self._metrics.login_failures.inc()
        for kind, key in keys.items():
            policy = self._policies[kind]
            failures = conn.execute(_FAILED, {"kind": kind, "key": key, "window": policy.lock_seconds}
                                    ).fetchone()["failures"]
            lock = policy.lock_for(failures)
            if lock:
                conn.execute("UPDATE login_throttle SET locked_until = now() + make_interval(secs => %s)"
                             " WHERE kind = %s AND key = %s", (lock, kind, key))
                self._remember(kind, key, lock)

    def succeeded(self, conn: psycopg.Connection, login: str) -> None:
        conn.execute("DELETE FROM login_throttle WHERE kind = 'login' AND key = %s", (login,))


def _refuse(wait: float) -> None:
    raise errors.resource_exhausted(f"too many failed logins: locked for {max(1, round(wait))} more second(s)",
                                    retry_after=max(wait, 0.0))


def _pair(keys: dict[str, str], kind: str) -> tuple[str, str]:
    return kind, keys.get(kind, "")


def purge(conn: psycopg.Connection, older_than_seconds: int) -> int:
    """Forget failures nobody repeated for a while and whose lock is over."""
    return conn.execute(
        "DELETE FROM login_throttle WHERE last_failure_at < now() - make_interval(secs => %s)"
        " AND (locked_until IS NULL OR locked_until < now())", (older_than_seconds,)).rowcount


def clear(conn: psycopg.Connection, kind: str, key: str) -> dict | None:
    """Forget one key's failures; its row as it was, or None when there was none."""
    if kind not in KINDS:
        raise errors.invalid("kind", "must be login or source")
    if not key:
        raise errors.invalid("key", "is required")
    stored = login_key(key) if kind == "login" else key.strip()
    return conn.execute("DELETE FROM login_throttle WHERE kind = %s AND key = %s RETURNING *",
                        (kind, stored)).fetchone()


def locked_now(row: dict, now: datetime) -> bool:
    return row["locked_until"] is not None and row["locked_until"] > now
