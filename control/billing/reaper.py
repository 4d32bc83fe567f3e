"""The reaper: calls that cannot still be running are settled, and their channels freed (SPEC §9).

A Kamailio node that died leaves its open calls in Redis, holding the accounts' concurrent-call slots, their
reservations and the trunks' channels. Each node sends a heartbeat every few seconds (kamailio.cfg); once a
node has been silent for node_dead_seconds (so that a node restarting sooner keeps its calls: it loads them
from its dialog tables) its calls are settled at what they cost up to its last heartbeat. A call whose end
its live node lost is settled at its grant once that has passed by reap_grace_seconds. callstate/lua/reap.lua
has the rules; this job finds the accounts and frees the trunks' channels (another Redis slot).
"""

from __future__ import annotations

import logging

from callstate.events import provider_settlement_id
from callstate.store import CallState

log = logging.getLogger("tollgate.reaper")


class Reaper:
    def __init__(self, state: CallState, *, grace_seconds: int, ring_seconds: int, node_dead_seconds: int):
        self._state = state
        self._grace = grace_seconds
        self._ring = ring_seconds
        self._node_dead = node_dead_seconds

    def reap(self, now: int) -> int:
        """Settle every orphaned call; how many."""
        freed = self._state.reap_trunks(now)
        if freed:
            log.warning("freed %d trunk channel(s) held past their calls' grant", freed)
        nodes = self._state.node_heartbeats()
        count = 0
        for account in list(self._state.accounts_with_open_calls()):
            reaped = self._state.reap(account, now=now, grace_seconds=self._grace, ring_seconds=self._ring,
                                      nodes=nodes, node_dead_seconds=self._node_dead)
            for call_id, trunk in reaped:
                if trunk:
                    self._state.release_trunk(trunk, provider_settlement_id(account, call_id))
                log.warning("settled orphaned call %s of account %s (its node or its end was lost)", call_id,
                            account)
            count += len(reaped)
        return count
