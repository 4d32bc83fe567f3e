"""The reaper: calls that cannot still be running are settled, and their channels freed (SPEC §9).

A Kamailio node that died leaves its open calls in Redis, holding the accounts' concurrent-call slots, their
reservations and the trunks' channels. Each node sends a heartbeat every few seconds (kamailio.cfg); once a
node has been silent for node_dead_seconds its calls are settled at what they cost up to its last heartbeat.
A node that restarts sooner keeps the calls it loads from its dialog table; the others it held (too young to
have been written, a second or two) are settled likewise, up to its last heartbeat before the restart: this
job reads which calls the table held when it first sees the restart. A call whose end its live node lost is
settled at its grant once that has passed by reap_grace_seconds. callstate/lua/reap.lua has the rules; this
job finds the accounts and frees the trunks' channels (another Redis slot).
"""

from __future__ import annotations

import logging

import psycopg

from callstate import dialogs
from callstate.events import provider_settlement_id
from callstate.store import CallState, NodeStart

log = logging.getLogger("tollgate.reaper")


class Reaper:
    def __init__(self, state: CallState, *, grace_seconds: int, ring_seconds: int, node_dead_seconds: int):
        self._state = state
        self._grace = grace_seconds
        self._ring = ring_seconds
        self._node_dead = node_dead_seconds
        # (node, its start) -> the calls its dialog table held, by account: read once per start, since the node
        # loaded those when it started and later rows are calls of its new life
        self._survivors: dict[tuple[str, float], dict[str, set[str]]] = {}

    def reap(self, conn: psycopg.Connection, now: int) -> int:
        """Settle every orphaned call; how many."""
        freed = self._state.reap_trunks(now)
        if freed:
            log.warning("freed %d trunk channel(s) held past their calls' grant", freed)
        nodes = self._state.node_heartbeats()
        restarts = self._state.node_restarts()
        survivors = self._survivors_of(conn, restarts)
        count = 0
        for account in list(self._state.accounts_with_open_calls()):
            kept = set().union(*(by_account.get(account, ()) for by_account in survivors.values()))
            reaped = self._state.reap(account, now=now, grace_seconds=self._grace, ring_seconds=self._ring,
                                      nodes=nodes, node_dead_seconds=self._node_dead, restarts=restarts,
                                      survivors=kept)
            for call_id, trunk in reaped:
                if trunk:
                    self._state.release_trunk(trunk, provider_settlement_id(account, call_id))
                log.warning("settled orphaned call %s of account %s (its node or its end was lost)", call_id,
                            account)
            count += len(reaped)
        return count

    def _survivors_of(self, conn: psycopg.Connection, restarts: dict[str, NodeStart]) -> dict:
        """The calls each restarted node loaded, from its dialog table (read the first time a start is seen)."""
        current = {(node, start.started) for node, start in restarts.items()}
        for key in current - self._survivors.keys():
            self._survivors[key] = dialogs.node_calls(conn, self._state.keys.namespace, key[0])
        for key in self._survivors.keys() - current:
            del self._survivors[key]
        return self._survivors
