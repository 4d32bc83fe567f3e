"""Redis is a cache of PostgreSQL, never the only copy of money (SPEC §9): its live balances are rebuilt from
the book when it lost them.

Every account's money hash carries `restored` once this service wrote it from PostgreSQL; until then the
admission refuses the account's paid calls (callstate/lua/admit_call.lua), so a Redis restarted empty never
grants a prepaid account nothing-to-spend nor a postpaid one its used credit again. The key
`<ns>:{cfg}:state` says the whole namespace was restored from this database; while it is missing (a new
Redis, an emptied one, a new database) every account is restored: its book balance, less the payments the
ledger has yet to push, is added to what calls settled since the loss, and the calls Kamailio's dialog
tables show in progress are reserved again. Accounts created later are restored as they appear. Kamailio's
keepalive answers 503 while the key is missing (kamailio.cfg), so balancers send calls elsewhere.

The restore waits SETTLE_SECONDS after the loss is seen: a call that ended just before the loss keeps its
row in Kamailio's dialog table for a few seconds more (its BYE transaction's wait timer), and must not be
reserved again as if it were in progress. Meanwhile the other money jobs wait too (a payment pushed, or an
event recorded, before the restore would be counted twice).

What Redis held and PostgreSQL did not is lost with it: settled calls whose events the ledger had not yet
recorded (a second of them with `appendfsync everysec`; see the README's "Redis" section).
"""

from __future__ import annotations

import logging
import time

import psycopg
import redis

from callstate import dialogs
from callstate.store import CallState

log = logging.getLogger("tollgate.restore")
BATCH = 500
# Longer than Kamailio's tm wait timer (5 s): a dialog that ended is gone from its table by then.
SETTLE_SECONDS = 7.0
RING_SECONDS = 120  # the longest a call rings (Kamailio's fr_inv_timer) before its grant starts


class LiveState:
    def __init__(self, state: CallState, client: redis.Redis, settle_seconds: float = SETTLE_SECONDS):
        self._state = state
        self._redis = client
        self._settle_seconds = settle_seconds
        self._last_account_id = 0  # accounts up to this id are known restored
        self._lost_at: float | None = None  # when the loss was first seen (time.monotonic())
        self.ready = False  # the live money is restored: the other money jobs may run

    @property
    def marker(self) -> str:
        return f"{self._state.keys.namespace}:{{cfg}}:state"

    def keep(self, conn: psycopg.Connection) -> int:
        """Restore what needs it (the whole namespace once its loss has settled); the number of accounts
        restored now. `ready` says whether the live money may be used."""
        epoch = str(conn.execute("SELECT epoch FROM projection_epoch").fetchone()["epoch"])
        if _text(self._redis.get(self.marker)) == epoch:
            self.ready = True
            return self._restore_new(conn)
        self.ready = False
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            log.warning("Redis has no restored live money: restoring from PostgreSQL in %g s", self._settle_seconds)
        if time.monotonic() - self._lost_at < self._settle_seconds and self._has_calls(conn):
            return 0
        restored = self._restore_all(conn)
        self._redis.set(self.marker, epoch)
        self._lost_at, self.ready = None, True
        log.warning("restored the live money of %d account(s) from PostgreSQL", restored)
        return restored

    def _has_calls(self, conn: psycopg.Connection) -> bool:
        """Whether Kamailio's tables show any call (without one, there is nothing to wait for)."""
        return bool(dialogs.open_calls(conn, self._state.keys.namespace))

    def _restore_all(self, conn: psycopg.Connection) -> int:
        self._last_account_id = 0
        return self._restore_from(conn, self._calls_in_progress(conn))

    def _calls_in_progress(self, conn: psycopg.Connection) -> dict:
        """The calls of Kamailio's dialog tables that may still be running: none with a CDR (they ended), none
        past its grant (it would have been cut)."""
        calls = dialogs.open_calls(conn, self._state.keys.namespace)
        ended = {(row["account_number"], row["call_id"]) for row in conn.execute(
            # (a refused attempt's CDR says nothing of the call its Call-ID was retried as)
            "SELECT account_number, call_id FROM cdrs WHERE call_id = ANY(%s) AND end_reason <> 'refused'",
            ([call_id for listed in calls.values() for call_id, _call in listed],)).fetchall()}
        now = time.time()
        return {account: [(call_id, call) for call_id, call in listed if (account, call_id) not in ended
                          and (call.answered_at or call.admitted_at) + call.granted + RING_SECONDS > now]
                for account, listed in calls.items()}

    def _restore_new(self, conn: psycopg.Connection) -> int:
        return self._restore_from(conn, {})

    def _restore_from(self, conn: psycopg.Connection, calls: dict) -> int:
        restored = 0
        while rows := conn.execute(
                "SELECT a.id, a.account_number, a.balance - coalesce(("
                "  SELECT sum(p.amount) FROM payments p WHERE p.account_number = a.account_number"
                "  AND p.pushed_at IS NULL), 0) AS live"
                " FROM accounts a WHERE a.id > %s ORDER BY a.id LIMIT %s",
                (self._last_account_id, BATCH)).fetchall():
            for row in rows:
                number = row["account_number"]
                restored += self._state.restore_account(number, int(row["live"]), calls.get(number, ()))
            self._last_account_id = rows[-1]["id"]
        return restored


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
