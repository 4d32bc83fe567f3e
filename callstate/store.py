"""Call admission and settlement in Redis (SPEC §5, §9), through the scripts of callstate/lua.

One atomic script per call setup checks, in SPEC order, the account's CPS, its concurrent calls and its
money, and reserves the granted call's cost; one atomic script per call end releases the reservation,
debits the real cost and queues the call's event - exactly once per call id, whatever is retried.

Money per account (HASH money): `balance` (micros, the live balance the switch debits) and `reserved` (sum of
the open calls' reservations). available = balance + credit_limit - reserved, where credit_limit is 0 for
prepaid accounts (SPEC §1).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import redis

from callstate import scripts
from callstate.connection import AnyRedis, clustered, load_everywhere
from callstate.events import CallEvent, provider_settlement_id
from callstate.keys import CALLS, EVENTS, MONEY, PAYMENTS, SETTLED, StateKeys

Terms = tuple[int, int, int, int, int]  # connect_fee, included_seconds, rate_per_min, initial, increment

# Outcomes of admit_call(); the SIP answers are the caller's business (SPEC §8).
ADMITTED = "admitted"
CPS_EXCEEDED = "cps"
CONCURRENCY_EXCEEDED = "concurrency"
INSUFFICIENT = "insufficient"
COUNTED = "counted"  # passed CPS and concurrency; the call was refused later, nothing reserved
DUPLICATE = "duplicate"  # the call id is open or settled already: admitting it again would make a free call
RESTORING = "restoring"  # the account's live money is not restored from PostgreSQL yet: no paid call
_OUTCOMES = {1: ADMITTED, -1: CPS_EXCEEDED, -2: CONCURRENCY_EXCEEDED, -3: INSUFFICIENT, 0: COUNTED, -4: DUPLICATE,
             -5: RESTORING}

TRUNK_SEIZED = "seized"
TRUNK_AT_CPS = "cps"
TRUNK_FULL = "full"
_TRUNK_OUTCOMES = {1: TRUNK_SEIZED, -1: TRUNK_AT_CPS, -2: TRUNK_FULL}

# How long a settled call id is remembered against retries, late settlements and reused Call-IDs: longer than
# the longest call (company max_call_seconds <= 24 h) plus ringing and the reaper's grace, so that a node that
# settles a call the reaper settled already still finds it; the set holds only this window's calls.
SETTLED_WINDOW_SECONDS = 26 * 3600
# A word a hiredis command format carries as it is: no space (it splits arguments) and no '%' (it formats).
_FORMAT_SAFE = re.compile(r"[^\s%]+")


@dataclass(frozen=True)
class NodeStart:
    """A Kamailio node's latest start (epoch seconds) and its last heartbeat before it."""

    started: float
    last_heartbeat: float


@dataclass(frozen=True)
class Grant:
    outcome: str
    granted: int = 0  # seconds the call may last (admitted)
    reserve: int = 0  # micros reserved = cost(granted) (admitted)
    available: int = 0  # what the account could spend before this call (admitted, insufficient)


@dataclass(frozen=True)
class Route:
    """The route an answered call took, as the answer mark records it (for the reaper's provider cost)."""

    provider: str
    terms: Terms
    trunk: str
    gateway: str

    def encode(self) -> str:
        return json.dumps(self.as_json(), separators=(",", ":"))

    def as_json(self) -> dict:
        return {"pv": self.provider, "pt": [str(t) for t in self.terms], "tr": self.trunk, "gw": self.gateway}

    @classmethod
    def from_json(cls, route: dict) -> Route:
        return cls(route["pv"], tuple(int(t) for t in route["pt"]), route.get("tr", ""), route.get("gw", ""))

    @classmethod
    def decode(cls, text: str) -> Route:
        return cls.from_json(json.loads(text))


@dataclass(frozen=True)
class OpenCall:
    """An open call as the calls hash keeps it (JSON, numbers as strings so that Lua's cjson never rounds)."""

    reserve: int
    granted: int
    admitted_at: int
    node: str
    terms: Terms
    answered_at: float | None = None
    route: Route | None = field(default=None)

    def encode(self) -> str:
        entry: dict = {"r": str(self.reserve), "g": str(self.granted), "t": str(self.admitted_at), "n": self.node,
                       "c": [str(t) for t in self.terms]}
        if self.answered_at is not None:
            entry["a"] = f"{self.answered_at:.6f}"
        if self.route is not None:
            entry["p"] = self.route.as_json()
        return json.dumps(entry, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | bytes) -> OpenCall:
        entry = json.loads(text)
        route = entry.get("p")
        return cls(int(entry["r"]), int(entry["g"]), int(entry["t"]), entry.get("n", ""),
                   tuple(int(t) for t in entry["c"]), float(entry["a"]) if entry.get("a") else None,
                   Route.from_json(route) if route else None)


def outcome_of(code: int) -> str:
    """The outcome an admission reply code means (ADMITTED, CPS_EXCEEDED, ...)."""
    return _OUTCOMES[code]


def grant_from_reply(reply: str | bytes) -> Grant:
    """The Grant in the admission script's reply "code:granted:reserve:available"."""
    code, granted, reserve, available = (int(value) for value in _text(reply).split(":"))
    return Grant(_OUTCOMES[code], granted, reserve, available)


class CallState:
    """The per-call Redis side of one stack (namespace)."""

    def __init__(self, client: AnyRedis, namespace: str):
        self._redis = client
        self.keys = StateKeys(namespace)
        self._scripts = {script.name: client.register_script(script.text) for script in scripts.ALL}

    def _run(self, script: scripts.Script, keys: list[str], args: list) -> object:
        return self._scripts[script.name](keys=keys, args=args)

    def load_scripts(self) -> None:
        """Load every script into Redis (redis-py loads them on first use; ndb_redis's EVALSHA cannot): on every
        node of a cluster, replicas too (callstate.connection.load_everywhere)."""
        for script in scripts.ALL:
            load_everywhere(self._redis, script.text)

    # ------------------------------------------------------------------ money
    def available(self, account: str, credit_limit: int) -> int:
        balance, reserved = self._redis.hmget(self.keys.account(account, MONEY), "balance", "reserved")
        return int(balance or 0) + credit_limit - int(reserved or 0)

    def credit(self, account: str, amount: int) -> None:
        """Add money to the live balance of an account whose money is known (tests and bootstrap: the balance
        is marked restored; payments go through apply_payment, restores through restore_account)."""
        key = self.keys.account(account, MONEY)
        pipe = self._redis.pipeline()
        pipe.hincrby(key, "balance", amount)
        pipe.hset(key, "restored", "1")
        pipe.execute()

    def apply_payment(self, account: str, payment_id: int, amount: int) -> bool:
        """Move the live balance by a payment posted in PostgreSQL, once per payment id; False for a repeat."""
        return bool(self._run(scripts.APPLY_PAYMENT, [self.keys.account(account, MONEY),
                                                      self.keys.account(account, PAYMENTS)], [payment_id, amount]))

    # ------------------------------------------------------------------ admission
    def admit_call(self, account: str, call_id: str, *, now: int, cps: int, max_calls: int, credit_limit: int,
                   terms: Sequence[int], max_call_seconds: int, decided: bool = True, reserve: bool = True,
                   node: str = "") -> Grant:
        """One round trip, in SPEC §5 order: a call id already admitted is DUPLICATE; then CPS, concurrent calls,
        and (when decided) the grant against the live balance: the longest affordable call under `terms`
        (connect_fee, included_seconds, rate_per_min, initial_increment, increment), up to max_call_seconds,
        its cost reserved (unless reserve=False: checked only, as a redirect server does). INSUFFICIENT when
        not even one second is affordable; RESTORING for a paid call while the account's money is not restored.
        `node` names the Kamailio node that holds the call (the reaper watches its heartbeat). A refused call's
        CDR is the caller's to record (record_refusal): the admitted ones, the common case, need no event."""
        mode = 0 if not decided else 1 if reserve else 2
        fee, included, rate, initial, increment = terms if decided else (0, 0, 0, 1, 1)
        numbers = (cps, max_calls, credit_limit, mode, max_call_seconds, fee, included, rate, initial, increment, now)
        return grant_from_reply(self._run(scripts.ADMIT_CALL, self._admission_keys(account, now),
                                          [call_id, *(str(int(n)) for n in numbers), node or "-"]))

    def admit_call_command(self, account: str, *, now: int, cps: int, max_calls: int, credit_limit: int,
                           terms: Sequence[int], max_call_seconds: int, decided: bool = True, reserve: bool = True,
                           node: str = "") -> str | None:
        """admit_call() as one hiredis command format with one `%s`, to be filled with the call id: the same
        script through a client other than redis-py (Kamailio's ndb_redis: redis_cmd_p1(server, command,
        call_id, reply)). Its reply goes to grant_from_reply(). None when the account or namespace holds a
        character a format cannot carry literally (then use admit_call()). The script must have been loaded
        (load_scripts()); a NOSCRIPT error says it was not. Built as one f-string: it runs once per INVITE."""
        base = self.keys.account_prefix(account)
        if not _FORMAT_SAFE.fullmatch(base + (node or "-")):
            return None
        mode = 0 if not decided else 1 if reserve else 2
        fee, included, rate, initial, increment = terms if decided else (0, 0, 0, 1, 1)
        return (f"EVALSHA {scripts.ADMIT_CALL.sha} 4 {base}{CALLS} {base}{MONEY} {base}cps:{int(now)} {base}{SETTLED} "
                f"%s {int(cps)} "
                f"{int(max_calls)} {int(credit_limit)} {mode} {int(max_call_seconds)} {int(fee)} {int(included)} "
                f"{int(rate)} {int(initial)} {int(increment)} {int(now)} {node or '-'}")

    def _admission_keys(self, account: str, now: int) -> list[str]:
        return [self.keys.account(account, CALLS), self.keys.account(account, MONEY), self.keys.cps(account, now),
                self.keys.account(account, SETTLED)]

    def record_refusal(self, account: str, event: CallEvent) -> bool:
        """A refused call's event, as its CDR (callstate/lua/record_refusal.lua); False when only counted (the
        ledger is far behind)."""
        return bool(self._run(scripts.RECORD_REFUSAL, [self.keys.account(account, EVENTS),
                                                       self.keys.account(account, MONEY)], [event.encode()]))

    def record_refusal_command(self, account: str) -> str | None:
        """record_refusal() as a hiredis command format with one `%s`: the event (see admit_call_command)."""
        base = self.keys.account_prefix(account)
        if not _FORMAT_SAFE.fullmatch(base):
            return None
        return f"EVALSHA {scripts.RECORD_REFUSAL.sha} 2 {base}{EVENTS} {base}{MONEY} %s"

    def mark_answered(self, account: str, call_id: str, answered_at: float, route: Route | None = None) -> bool:
        """Note that the open call was answered, over which route (kamailio.cfg does this natively; this is
        its fallback and the tests')."""
        return bool(self._run(scripts.MARK_ANSWERED, [self.keys.account(account, CALLS)],
                              [call_id, f"{answered_at:.6f}", route.encode() if route else "-"]))

    def open_calls(self, account: str) -> int:
        return int(self._redis.hlen(self.keys.account(account, CALLS)))

    def calls_this_second(self, account: str, second: int) -> int:
        """The account's new calls counted in that second (the admission's CPS counter), without counting one."""
        return int(self._redis.get(self.keys.cps(account, second)) or 0)

    def trunk_calls_this_second(self, trunk: str, second: int) -> int:
        """The trunk's channels seized in that second (seize_trunk's CPS counter), without seizing one."""
        return int(self._redis.get(self.keys.trunk(trunk, f"cps:{second}")) or 0)

    def open_call(self, account: str, call_id: str) -> OpenCall | None:
        entry = self._redis.hget(self.keys.account(account, CALLS), call_id)
        return OpenCall.decode(entry) if entry else None

    # ------------------------------------------------------------------ settlement
    def settle(self, account: str, call_id: str, cost: int, event: CallEvent) -> bool:
        """Release the call's reservation and debit its cost, once per call id; False for a repeat."""
        return bool(self._run(scripts.SETTLE, self._money_keys(account),
                              [call_id, cost, SETTLED_WINDOW_SECONDS, event.encode()]))

    def settle_command(self, account: str, cost: int) -> str | None:
        """settle() as a hiredis command format with two `%s`: the settlement id (call id), then the event
        (CallEvent.encode). None when the account or namespace cannot be carried literally (see
        admit_call_command)."""
        base = self.keys.account_prefix(account)
        if not _FORMAT_SAFE.fullmatch(base):
            return None
        return (f"EVALSHA {scripts.SETTLE.sha} 4 {base}{CALLS} {base}{MONEY} {base}{SETTLED} {base}{EVENTS} %s "
                f"{int(cost)} {SETTLED_WINDOW_SECONDS} %s")

    def credit_provider(self, provider: str, customer: str, call_id: str, amount: int) -> bool:
        """The provider's side of a settled call, from its event (the ledger applies it): credited `amount`
        once per (customer, call id). False for a repeat."""
        return bool(self._run(scripts.CREDIT_PROVIDER, [self.keys.account(provider, MONEY),
                                                        self.keys.account(provider, SETTLED)],
                              [provider_settlement_id(customer, call_id), amount, SETTLED_WINDOW_SECONDS]))

    def credit_providers(self, credits: Sequence[tuple[str, str, str, int]]) -> None:
        """credit_provider() for each (provider, customer, call id, amount), in one round trip."""
        if not credits:
            return
        try:
            self._credit_providers(credits)
        except redis.exceptions.NoScriptError:
            # A cluster's pipeline cannot load a script a node lacks (a replica promoted since); each credit is
            # once per settlement id, so the whole batch may simply run again.
            load_everywhere(self._redis, scripts.CREDIT_PROVIDER.text)
            self._credit_providers(credits)

    def _credit_providers(self, credits: Sequence[tuple[str, str, str, int]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for provider, customer, call_id, amount in credits:
            keys = [self.keys.account(provider, MONEY), self.keys.account(provider, SETTLED)]
            args = [provider_settlement_id(customer, call_id), amount, SETTLED_WINDOW_SECONDS]
            if clustered(self._redis):  # (a cluster pipeline refuses evalsha(): the raw command it takes)
                pipe.execute_command("EVALSHA", scripts.CREDIT_PROVIDER.sha, len(keys), *keys, *args)
            else:
                self._scripts[scripts.CREDIT_PROVIDER.name](keys=keys, args=args, client=pipe)
        pipe.execute()

    def _money_keys(self, account: str) -> list[str]:
        return [self.keys.account(account, name) for name in (CALLS, MONEY, SETTLED, EVENTS)]

    def events_key(self, account: str) -> str:
        """The stream of the account's settled calls (its CDRs on their way to PostgreSQL)."""
        return self.keys.account(account, EVENTS)

    # ------------------------------------------------------------------ orphans
    def reap(self, account: str, *, now: int, grace_seconds: int, ring_seconds: int = 120,
             nodes: dict[str, float] | None = None, node_dead_seconds: int = 60,
             restarts: dict[str, NodeStart] | None = None, survivors: Iterable[str] = ()) -> list[tuple[str, str]]:
        """Settle the calls of `account` that cannot still be running (callstate/lua/reap.lua): their node has
        sent no heartbeat for `node_dead_seconds` (`nodes`: node -> last heartbeat); their node restarted after
        they were admitted (`restarts`) and did not load them from its dialog table (`survivors`: the call ids
        it did load); or they outlived their grant (answered) or the ring time (unanswered) by `grace_seconds`.
        Each is charged up to the last moment it was known alive, once (a late real end is then a repeat), its
        event saying end_reason "orphaned". Returns (call id, trunk) per reaped call; the caller frees the
        trunks' channels."""
        restarted = {node: [start.started, start.last_heartbeat] for node, start in (restarts or {}).items()}
        reaped = self._run(scripts.REAP, self._money_keys(account),
                           [now, grace_seconds, SETTLED_WINDOW_SECONDS, account, ring_seconds,
                            json.dumps(nodes or {}), node_dead_seconds, json.dumps(restarted),
                            json.dumps(dict.fromkeys(survivors, 1))])
        return [tuple(_text(v) for v in pair) for pair in reaped]

    # ------------------------------------------------------------------ nodes and restoring
    def heartbeat(self, node: str, at: float) -> None:
        """A Kamailio node says it is alive (kamailio.cfg does this natively every few seconds)."""
        self._redis.hset(self.keys.nodes, node, f"{at:.0f}")

    def node_heartbeats(self) -> dict[str, float]:
        return {_text(node): float(at) for node, at in self._redis.hgetall(self.keys.nodes).items()}

    def node_started(self, node: str, at: float, started: float | None = None) -> None:
        """A Kamailio node's first heartbeat at `at`, its process started at `started` (default: `at`);
        kamailio.cfg does this natively, the tests here."""
        self._redis.eval(scripts.NODE_STARTED.text, 2, self.keys.nodes, self.keys.node_starts, node, f"{at:.0f}",
                         f"{at if started is None else started:.0f}")

    def node_restarts(self) -> dict[str, NodeStart]:
        """Each node's latest start: when, and its last heartbeat before it."""
        starts = {}
        for node, value in self._redis.hgetall(self.keys.node_starts).items():
            started, _, before = _text(value).partition(":")
            starts[_text(node)] = NodeStart(float(started), float(before or started))
        return starts

    def restore_account(self, account: str, balance: int, calls: Sequence[tuple[str, OpenCall]] = ()) -> bool:
        """Rebuild the account's live money after Redis lost it (callstate/lua/restore_account.lua): `balance`
        added, the open `calls` reserved again; once. False when it was restored already."""
        return bool(self._run(scripts.RESTORE_ACCOUNT, [self.keys.account(account, MONEY),
                                                        self.keys.account(account, CALLS),
                                                        self.keys.account(account, SETTLED)],
                              [int(balance), json.dumps([[call_id, call.encode()] for call_id, call in calls])]))

    def restored(self, account: str) -> bool:
        return bool(self._redis.hexists(self.keys.account(account, MONEY), "restored"))

    def accounts_with_open_calls(self) -> Iterator[str]:
        """Accounts that have a calls hash (some open call), found by SCAN."""
        for key in self._redis.scan_iter(match=self.keys.account_pattern(CALLS), count=1000, _type="hash"):
            account = self.keys.account_of(key, CALLS)
            if account is not None:
                yield account

    # ------------------------------------------------------------------ trunks (SPEC §3, §5: channels and CPS)
    def seize_trunk(self, trunk: str, seat: str, *, now: int, max_calls: int, cps: int, hold_until: int) -> str:
        """One of the trunk's channels for `seat` (provider_settlement_id of the call), counted against its CPS
        this second, cluster-wide: TRUNK_SEIZED, TRUNK_AT_CPS or TRUNK_FULL. A trunk without limits needs no
        seat (callers skip this). The seat is freed by release_trunk, or by reap_trunks after hold_until."""
        code = self._run(scripts.SEIZE_TRUNK, [self.keys.trunk(trunk, CALLS), self.keys.trunk(trunk, f"cps:{now}")],
                         [seat, max_calls, cps, hold_until])
        return _TRUNK_OUTCOMES[int(code)]

    def release_trunk(self, trunk: str, seat: str) -> None:
        self._redis.hdel(self.keys.trunk(trunk, CALLS), seat)

    def busy_channels(self, trunk: str) -> int:
        return int(self._redis.hlen(self.keys.trunk(trunk, CALLS)))

    def reap_trunks(self, now: int) -> int:
        """Free every trunk seat held past its hold-until time (its call's node died); how many were freed."""
        freed = 0
        for key in self._redis.scan_iter(match=self.keys.trunk_pattern(CALLS), count=1000, _type="hash"):
            freed += int(self._run(scripts.REAP_TRUNK, [key], [now]))
        return freed


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
