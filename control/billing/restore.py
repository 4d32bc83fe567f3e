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

What Redis held and PostgreSQL did not is lost with it: settled calls whose events the ledger had not yet
recorded (a second of them with `appendfsync everysec`; see the README's "Redis" section).
"""

from __future__ import annotations

import logging

import psycopg
import redis

from callstate import dialogs
from callstate.store import CallState

log = logging.getLogger("tollgate.restore")
BATCH = 500


class LiveState:
    def __init__(self, state: CallState, client: redis.Redis):
        self._state = state
        self._redis = client
        self._last_account_id = 0  # accounts up to this id are known restored

    @property
    def marker(self) -> str:
        return f"{self._state.keys.namespace}:{{cfg}}:state"

    def keep(self, conn: psycopg.Connection) -> int:
        """Restore what needs it; the number of accounts restored now."""
        epoch = str(conn.execute("SELECT epoch FROM projection_epoch").fetchone()["epoch"])
        if _text(self._redis.get(self.marker)) != epoch:
            restored = self._restore_all(conn)
            self._redis.set(self.marker, epoch)
            if restored:
                log.warning("restored the live money of %d account(s) from PostgreSQL", restored)
            return restored
        return self._restore_new(conn)

    def _restore_all(self, conn: psycopg.Connection) -> int:
        self._last_account_id = 0
        calls = dialogs.open_calls(conn, self._state.keys.namespace)
        return self._restore_from(conn, calls)

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
