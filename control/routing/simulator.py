"""The route simulator (RouteService.SimulateCall): one call traced as a relay node would decide it now.

Nothing here decides a call. The decision and its trace come from the engine Kamailio runs (fastpath.engine_class:
the compiled one when it is built) on the live projection, followed the way a node follows it (FastPath). What
is added is what a node reads from Redis at admission and relay - the account's new calls this second, its open
calls, its live balance, the trunks' channels - and the order in which kemi/tollgate_kemi.py turns those and the
decision into the SIP answer (SPEC §5, §8). Redis is only read: no call is counted, no money reserved.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass

import redis

import fastpath
from callstate.connection import connect
from callstate.events import REFUSALS
from callstate.store import CallState
from fastpath import snapshot_format as fmt
from fastpath.decision import BEFORE_BALANCE
from fastpath.feed import SnapshotGone
from fastpath.model import World
from fastpath.runtime import FastPath

# What kemi/tollgate_kemi.py decides with first: money is the admission's business (PLENTY there).
PLENTY = 1 << 62
POSTPAID = "POSTPAID"
# The admission script's reply codes (callstate/lua/admit_call.lua), whose answers callstate.events.REFUSALS holds.
CPS_EXCEEDED, CONCURRENCY_EXCEEDED, INSUFFICIENT, RESTORING = -1, -2, -3, -5


class ProjectionUnavailable(Exception):
    """Redis (the projection or the call state) cannot be read now."""


@dataclass(frozen=True)
class Answer:
    code: int
    reason: str
    stage: str  # the refusing check as a CDR names it; "" when the call would be relayed


@dataclass(frozen=True)
class Live:
    """What the admission would read for this call: the account's side of the call state, now."""

    available: int  # balance + credit limit - reserved
    restored: bool  # the account's money is known (restored from PostgreSQL after a Redis loss)
    calls_this_second: int
    open_calls: int


@dataclass(frozen=True)
class TrunkLive:
    """A trunk's channels and CPS now, as seize_trunk would count them (only read for trunks with limits)."""

    busy_channels: int = 0
    calls_this_second: int = 0


@dataclass(frozen=True)
class Simulation:
    """Everything the report shows: the engine's two decisions (as the node makes them), its trace, the live
    counters and the answer they add up to."""

    world: World
    engine: str
    account: str
    at: int
    plenty: object  # the Decision made with PLENTY money (the node's first decision)
    decision: object  # the Decision made with the live available money (the grant, the route costs)
    facts: tuple[tuple, ...]
    live: Live
    trunks: dict[str, TrunkLive]
    relay_index: int | None  # the route the relay would seize first; None when every one is at its limit
    answer: Answer


class Simulator:
    """A FastPath of the control service's own, following the projection, and the call state it is next to."""

    def __init__(self, redis_url: str, namespace: str = fmt.DEFAULT_NAMESPACE) -> None:
        self._images = tempfile.mkdtemp(prefix="tollgate-simulator-")
        client = connect(redis_url, socket_timeout=5, socket_connect_timeout=2)  # a cluster URL too
        self._fast = FastPath(client, self._images, namespace)
        self._state = CallState(client, namespace)
        # One simulation at a time: following the projection replaces the World and the engine in place.
        self._lock = threading.Lock()

    def close(self) -> None:
        shutil.rmtree(self._images, ignore_errors=True)

    def simulate(self, account: str, caller_id: str, number: str, at: int | None = None,
                 call_id: str = "") -> Simulation:
        now = int(time.time())
        at = now if at is None else at
        entropy = zlib.crc32(call_id.encode())  # as the node picks CLI pool options 1 and 2's "random" entry
        with self._lock:
            try:
                world, engine = self._follow()
                live = self._live(world, account, now)
                plenty = engine.decide(account, caller_id, number, PLENTY, at, entropy)
                decision, facts = engine.trace(account, caller_id, number, live.available, at, entropy)
                trunks = self._trunks_live(decision, now)
            except (redis.RedisError, OSError, ValueError, SnapshotGone) as exc:
                raise ProjectionUnavailable(str(exc)) from exc
        relay_index = first_free_route(decision, trunks)
        answer = predict(plenty, decision, world.accounts.get(account), live, relay_index)
        return Simulation(world, fastpath.__impl__, account, at, plenty, decision, facts, live, trunks, relay_index,
                          answer)

    def _follow(self) -> tuple[World, object]:
        """The live projection, read as a node reads it (only the families whose version changed)."""
        self._fast.load()
        return self._fast.world, self._fast.engine

    def _live(self, world: World, account: str, now: int) -> Live:
        known = world.accounts.get(account)
        credit = known.credit_limit if known is not None and known.account_type == POSTPAID else 0
        state = self._state
        return Live(state.available(account, credit), state.restored(account), state.calls_this_second(account, now),
                    state.open_calls(account))

    def _trunks_live(self, decision, now: int) -> dict[str, TrunkLive]:
        return {route.trunk: TrunkLive(self._state.busy_channels(route.trunk),
                                       self._state.trunk_calls_this_second(route.trunk, now))
                for route in decision.routes if route.max_concurrent_calls or route.cps}


def at_limit(route, live: TrunkLive | None) -> bool:
    """Whether seize_trunk would refuse the route's trunk now: over its CPS with this call, or every channel busy
    (callstate/lua/seize_trunk.lua's order)."""
    if live is None:
        return False
    over_cps = route.cps > 0 and live.calls_this_second + 1 > route.cps
    full = route.max_concurrent_calls > 0 and live.busy_channels >= route.max_concurrent_calls
    return over_cps or full


def first_free_route(decision, trunks: dict[str, TrunkLive]) -> int | None:
    """The route kemi/relay.py seize_from() would take first (the engine keeps only trunks with gateways)."""
    for index, route in enumerate(decision.routes):
        if not at_limit(route, trunks.get(route.trunk)):
            return index
    return None


def _admission(code: int) -> Answer:
    return Answer(*REFUSALS[code])


def _paid(terms: tuple) -> bool:
    """The admission checks that money is restored only for calls that cost something."""
    return bool(terms) and (terms[0] != 0 or terms[2] != 0)


def predict(plenty, decision, account, live: Live, relay_index: int | None) -> Answer:
    """The answer in kemi/tollgate_kemi.py's order (_decide_and_admit, then relay_outbound): the account, the
    admission's CPS and concurrent calls, the decision's refusals (re-decided with the real balance when the
    refusal comes after the money check), the money's restoration and the grant, then a trunk with a free
    channel."""
    if plenty.stage == "account" or account is None:
        return Answer(plenty.code, plenty.reason, plenty.stage)
    if account.cps and live.calls_this_second + 1 > account.cps:
        return _admission(CPS_EXCEEDED)
    if account.max_concurrent_calls and live.open_calls >= account.max_concurrent_calls:
        return _admission(CONCURRENCY_EXCEEDED)
    if plenty.code != 200:
        refused = plenty if plenty.stage in BEFORE_BALANCE else decision
        return Answer(refused.code, refused.reason, refused.stage)
    if _paid(plenty.terms) and not live.restored:
        return _admission(RESTORING)
    if decision.code != 200:  # decided with PLENTY, but the live balance pays not even the first block
        return _admission(INSUFFICIENT)
    if decision.direction == "outbound" and relay_index is None:
        return Answer(503, "No route available", "route")
    return Answer(200, "Relayed", "")
