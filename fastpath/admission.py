"""Call admission and settlement in Redis (SPEC §5, §9): what every Kamailio node must see the same.

One atomic script per call setup checks, in SPEC order, the account's CPS, its concurrent calls and its
money, and reserves the granted call's cost; one atomic script per call end releases the reservation,
debits the real cost and queues the call's event — exactly once per call id, whatever is retried.
Keys of one account share the hash tag {a:<account>}, so each script touches one slot (Redis Cluster).

Money per account (HASH <ns>:{a:N}:money): `balance` (micros, the live balance the switch debits) and
`reserved` (sum of the open calls' reservations). available = balance + credit_limit - reserved, where
credit_limit is 0 for prepaid accounts (SPEC §1).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import redis

from fastpath import snapshot_format as fmt

# Outcomes of admit_call(); the SIP answers are the caller's business (SPEC §8).
ADMITTED = "admitted"
CPS_EXCEEDED = "cps"
CONCURRENCY_EXCEEDED = "concurrency"
INSUFFICIENT = "insufficient"
COUNTED = "counted"  # passed CPS and concurrency; the call was refused later, nothing reserved

SETTLED_TTL_SECONDS = 7 * 86_400  # how long a settled call id is remembered against retries

# CPS, concurrent calls, then the grant computed in the script from the balance it reserves against (SPEC §4, §5):
# granted = the largest b <= max_call_seconds with cost(b) <= available (fastpath.reference.rating's
# max_duration), reserve = cost(granted). Integer-exact in Lua's doubles while every value stays below 2^53:
# rate_per_min is split as 60q + r so that charged * rate / 60 never forms a product above ~1.5e15.
# KEYS: calls, money, cps(second). ARGV: call id, cps limit, call limit, credit limit, mode (0: count only,
# 1: grant and reserve, 2: grant without reserving), max call seconds, connect fee, included seconds,
# rate per minute, initial increment, increment, now (epoch seconds).
# Returns {code, granted, reserve, available}; the calls hash keeps "reserve:granted:admitted_at" per open call.
_ADMIT_CALL = """
local reserved = redis.call('HGET', KEYS[1], ARGV[1])
if reserved then
  local r, g = string.match(reserved, '^(-?%d+):?(%d*)')
  return {1, tonumber(g) or 0, tonumber(r), 0}
end
local cps = tonumber(ARGV[2])
if cps > 0 then
  local n = redis.call('INCR', KEYS[3])
  if n == 1 then redis.call('EXPIRE', KEYS[3], 2) end
  if n > cps then return {-1, 0, 0, 0} end
end
local limit = tonumber(ARGV[3])
if limit > 0 and redis.call('HLEN', KEYS[1]) >= limit then return {-2, 0, 0, 0} end
local mode = ARGV[5]
if mode == '0' then return {0, 0, 0, 0} end
local money = redis.call('HMGET', KEYS[2], 'balance', 'reserved')
local available = tonumber(money[1] or '0') + tonumber(ARGV[4]) - tonumber(money[2] or '0')
local max_seconds = tonumber(ARGV[6])
local fee, included, rate = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local initial, increment = tonumber(ARGV[10]), tonumber(ARGV[11])
local rate_q = math.floor(rate / 60)
local rate_r = rate - 60 * rate_q
local function cost(b)
  if b <= 0 then return 0 end
  local rest = b - included
  local charged = 0
  if rest <= 0 then
    charged = 0
  elseif rest <= initial then
    charged = initial
  else
    charged = initial + math.ceil((rest - initial) / increment) * increment
  end
  return fee + charged * rate_q + math.ceil(charged * rate_r / 60)
end
local granted
if fee == 0 and rate == 0 then
  granted = max_seconds
elseif cost(1) > available then
  granted = 0
elseif cost(max_seconds) <= available then
  granted = max_seconds
else
  local low, high = 1, max_seconds
  while high - low > 1 do
    local middle = math.floor((low + high) / 2)
    if cost(middle) <= available then low = middle else high = middle end
  end
  granted = low
end
if granted <= 0 then return {-3, 0, 0, available} end
local reserve = cost(granted)
if mode == '1' then
  redis.call('HINCRBY', KEYS[2], 'reserved', reserve)
  redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d:%d', reserve, granted, ARGV[12]))
end
return {1, granted, reserve, available}
"""

# KEYS: calls, money, settled, events stream. ARGV: call id, cost, settled TTL, the event (JSON, encode_event).
_SETTLE = """
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return 0 end
local reserved = redis.call('HGET', KEYS[1], ARGV[1])
if reserved then  -- "reserve:granted:admitted_at"
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HINCRBY', KEYS[2], 'reserved', 0 - tonumber(string.match(reserved, '^-?%d+')))
end
redis.call('HINCRBY', KEYS[2], 'balance', 0 - tonumber(ARGV[2]))  -- never '-0', which HINCRBY refuses
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('XADD', KEYS[4], '*', 'event', ARGV[4])
return 1
"""


# A word a hiredis command format carries as it is: no space (it splits arguments) and no '%' (it formats).
_FORMAT_SAFE = re.compile(r"[^\s%]+")
_OUTCOMES = {1: ADMITTED, -1: CPS_EXCEEDED, -2: CONCURRENCY_EXCEEDED, -3: INSUFFICIENT, 0: COUNTED}


# KEYS: calls, money, settled, events stream. ARGV: now, grace seconds, settled TTL, account, ring seconds.
# Every open call that cannot still be running - answered more than granted + grace seconds ago, or never
# answered and admitted more than ring + grace seconds ago - released and settled at no cost, its event
# saying so (end_reason "orphaned"). Returns the call ids.
_REAP = """
local now, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
local reaped = {}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local call_id = entries[i]
  local r, g, t, a = string.match(entries[i + 1], '^(-?%d+):(%d+):(%d+):?(%d*)$')
  local deadline = nil
  if a and a ~= '' then deadline = tonumber(a) + tonumber(g) + grace
  elseif t then deadline = tonumber(t) + tonumber(ARGV[5]) + grace end
  if deadline and deadline < now and redis.call('SISMEMBER', KEYS[3], call_id) == 0 then
    redis.call('HDEL', KEYS[1], call_id)
    redis.call('HINCRBY', KEYS[2], 'reserved', 0 - tonumber(r))
    redis.call('SADD', KEYS[3], call_id)
    redis.call('EXPIRE', KEYS[3], ARGV[3])
    redis.call('XADD', KEYS[4], '*', 'event', cjson.encode({call_id = call_id, account = ARGV[4], setup_time = t,
               end_time = tostring(now), billable_seconds = '0', sip_code = '0', customer_cost = '0',
               provider_cost = '0', end_reason = 'orphaned'}))
    reaped[#reaped + 1] = call_id
  end
end
return reaped
"""


# KEYS: money, payments applied. ARGV: payment id, amount. 1 when applied now, 0 when it already was.
_APPLY_PAYMENT = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'balance', ARGV[2])
return 1
"""


# KEYS: the trunk's seats (call -> hold-until epoch second), its cps(second). ARGV: seat id, channel limit, cps
# limit, hold until. 1: seized (or already held by this call), -1: at its CPS limit, -2: every channel busy.
_SEIZE_TRUNK = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 1 end
local cps = tonumber(ARGV[3])
if cps > 0 then
  local n = redis.call('INCR', KEYS[2])
  if n == 1 then redis.call('EXPIRE', KEYS[2], 2) end
  if n > cps then return -1 end
end
local limit = tonumber(ARGV[2])
if limit > 0 and redis.call('HLEN', KEYS[1]) >= limit then return -2 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
return 1
"""

# KEYS: a trunk's seats. ARGV: now. Frees the seats held past their hold-until time; returns how many.
_REAP_TRUNK = """
local freed = 0
local seats = redis.call('HGETALL', KEYS[1])
for i = 1, #seats, 2 do
  if tonumber(seats[i + 1]) < tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], seats[i])
    freed = freed + 1
  end
end
return freed
"""
TRUNK_SEIZED = "seized"
TRUNK_AT_CPS = "cps"
TRUNK_FULL = "full"
_TRUNK_OUTCOMES = {1: TRUNK_SEIZED, -1: TRUNK_AT_CPS, -2: TRUNK_FULL}


# KEYS: calls. ARGV: call id, answered at (epoch second). Appends it to the open call's "reserve:granted:
# admitted_at" once, so that the reaper counts the granted seconds from the answer.
_MARK_ANSWERED = """
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry or not string.match(entry, '^-?%d+:%d+:%d+$') then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], entry .. ':' .. ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Grant:
    outcome: str
    granted: int = 0  # seconds the call may last (admitted)
    reserve: int = 0  # micros reserved = cost(granted) (admitted)
    available: int = 0  # what the account could spend before this call (admitted, insufficient)


def encode_event(event: dict[str, str | int]) -> str:
    """A call's event as its stream entry carries it (one field, `event`): JSON, every value a string."""
    return json.dumps({name: str(value) for name, value in event.items()}, separators=(",", ":"))


def decode_event(fields: dict[bytes, bytes] | dict[str, str]) -> dict[str, str]:
    """The event of a stream entry (encode_event, or the reaper's)."""
    raw = fields.get(b"event", fields.get("event")) if fields else None
    if raw is None:
        raise ValueError(f"stream entry without an event field: {sorted(fields or {})}")
    return json.loads(raw)


def provider_settlement_id(customer: str, call_id: str) -> str:
    """What a provider's settlement and ledger entry are keyed by (Admissions.credit_provider)."""
    return f"{customer}/{call_id}"


def grant_from_reply(reply: Sequence[int | str | bytes]) -> Grant:
    """The Grant in the admission script's reply {code, granted, reserve, available}."""
    code, granted, reserve, available = (int(value) for value in reply)
    return Grant(_OUTCOMES[code], granted, reserve, available)


class Admissions:
    """The per-call Redis side of one stack (namespace)."""

    def __init__(self, client: redis.Redis, namespace: str = fmt.DEFAULT_NAMESPACE):
        self._redis = client
        self._namespace = namespace
        self._admit_call = client.register_script(_ADMIT_CALL)
        self._settle = client.register_script(_SETTLE)
        self._reap = client.register_script(_REAP)
        self._mark_answered = client.register_script(_MARK_ANSWERED)
        self._apply_payment = client.register_script(_APPLY_PAYMENT)
        self._seize_trunk = client.register_script(_SEIZE_TRUNK)
        self._reap_trunk = client.register_script(_REAP_TRUNK)

    def _key(self, account: str, name: str) -> str:
        return f"{self._namespace}:{{a:{account}}}:{name}"

    def available(self, account: str, credit_limit: int) -> int:
        balance, reserved = self._redis.hmget(self._key(account, "money"), "balance", "reserved")
        return int(balance or 0) + credit_limit - int(reserved or 0)

    def admit_call(self, account: str, call_id: str, *, now: int, cps: int, max_calls: int, credit_limit: int,
                   terms: tuple[int, int, int, int, int] | Sequence[int], max_call_seconds: int, decided: bool = True,
                   reserve: bool = True) -> Grant:
        """One round trip, in SPEC §5 order: a retransmission gets its first answer; then CPS, concurrent calls,
        and (when decided) the grant against the live balance: the longest affordable call under `terms`
        (connect_fee, included_seconds, rate_per_min, initial_increment, increment), up to max_call_seconds,
        its cost reserved (unless reserve=False: checked only, as a redirect server does). INSUFFICIENT when
        not even one second is affordable."""
        keys, args = self._admit_call_keys_args(account, call_id, now=now, cps=cps, max_calls=max_calls,
                                                credit_limit=credit_limit, terms=terms,
                                                max_call_seconds=max_call_seconds, decided=decided, reserve=reserve)
        return grant_from_reply(self._admit_call(keys=keys, args=args))

    def admit_call_command(self, account: str, call_id: str, *, now: int, cps: int, max_calls: int,
                           credit_limit: int, terms: tuple[int, int, int, int, int] | Sequence[int],
                           max_call_seconds: int, decided: bool = True, reserve: bool = True) -> str | None:
        """admit_call() as one hiredis command format with a single `%s`, to be filled with the call id: the
        same script through a client other than redis-py (Kamailio's ndb_redis: redis_cmd_p1(server, command,
        call_id, reply)). Its reply goes to grant_from_reply(). None when the account or namespace holds a
        character a format cannot carry literally (then use admit_call()). The script must have been loaded
        (load_scripts()); a NOSCRIPT error says it was not. Built by hand, not from _admit_call_keys_args: it
        runs once per INVITE."""
        base = self._key(account, "")
        if not _FORMAT_SAFE.fullmatch(base):
            return None
        mode = 0 if not decided else 1 if reserve else 2
        fee, included, rate, initial, increment = terms if decided else (0, 0, 0, 1, 1)
        return (f"EVALSHA {self._admit_call.sha} 3 {base}calls {base}money {base}cps:{int(now)} %s {int(cps)} "
                f"{int(max_calls)} {int(credit_limit)} {mode} {int(max_call_seconds)} {int(fee)} {int(included)} "
                f"{int(rate)} {int(initial)} {int(increment)} {int(now)}")

    def load_scripts(self) -> None:
        """Load the scripts into Redis (redis-py loads them on first use; other clients cannot)."""
        for script in (self._admit_call, self._settle, self._mark_answered):
            self._redis.script_load(script.script)

    def _admit_call_keys_args(self, account: str, call_id: str, *, now: int, cps: int, max_calls: int,
                              credit_limit: int, terms: tuple[int, int, int, int, int] | Sequence[int],
                              max_call_seconds: int, decided: bool = True,
                              reserve: bool = True) -> tuple[list[str], list[str]]:
        mode = 0 if not decided else 1 if reserve else 2
        fee, included, rate, initial, increment = terms if decided else (0, 0, 0, 1, 1)
        keys = [self._key(account, "calls"), self._key(account, "money"), self._key(account, f"cps:{now}")]
        numbers = (cps, max_calls, credit_limit, mode, max_call_seconds, fee, included, rate, initial, increment, now)
        return keys, [call_id, *(str(int(n)) for n in numbers)]

    def settle(self, account: str, call_id: str, cost: int, event: dict[str, str | int]) -> bool:
        """Release the call's reservation and debit its cost, once per call id; False for a repeat."""
        done = self._settle(keys=self._money_keys(account),
                            args=[call_id, cost, SETTLED_TTL_SECONDS, encode_event(event)])
        return bool(done)

    def settle_command(self, account: str, cost: int) -> str | None:
        """settle() as a hiredis command format with two `%s`: the settlement id (call id), then the event
        (encode_event). None when the account or namespace cannot be carried literally (see
        admit_call_command)."""
        base = self._key(account, "")
        if not _FORMAT_SAFE.fullmatch(base):
            return None
        return (f"EVALSHA {self._settle.sha} 4 {base}calls {base}money {base}settled {base}events %s {int(cost)} "
                f"{SETTLED_TTL_SECONDS} %s")

    def mark_answered_command(self, account: str, answered_at: int) -> str | None:
        """mark_answered() as a hiredis command format with one `%s`: the call id."""
        base = self._key(account, "")
        if not _FORMAT_SAFE.fullmatch(base):
            return None
        return f"EVALSHA {self._mark_answered.sha} 1 {base}calls %s {int(answered_at)}"

    def credit_provider(self, provider: str, customer: str, call_id: str, amount: int,
                        event: dict[str, str | int]) -> bool:
        """The provider's side of a settled call: credited `amount` once per (customer, call id) - a Call-ID is
        chosen by the caller's equipment, so two customers' calls may share one. False for a repeat."""
        return self.settle(provider, provider_settlement_id(customer, call_id), -amount, event)

    def mark_answered(self, account: str, call_id: str, answered_at: int) -> bool:
        """Note that the open call was answered (the reaper then counts its granted seconds from here)."""
        return bool(self._mark_answered(keys=[self._key(account, "calls")], args=[call_id, answered_at]))

    def reap(self, account: str, *, now: int, grace_seconds: int, ring_seconds: int = 120) -> list[str]:
        """Release the calls of `account` that cannot still be running: answered more than their granted
        seconds plus `grace_seconds` ago, or never answered and admitted more than `ring_seconds` (the
        switch's longest ring time) plus `grace_seconds` ago. Their node died or lost their end; nobody knows
        how long they lasted, so they are settled at no cost (once: a late real end is then a repeat) and
        their events say end_reason "orphaned" for the operator to look into."""
        reaped = self._reap(keys=self._money_keys(account),
                            args=[now, grace_seconds, SETTLED_TTL_SECONDS, account, ring_seconds])
        return [call_id.decode() if isinstance(call_id, bytes) else call_id for call_id in reaped]

    def accounts_with_open_calls(self) -> Iterator[str]:
        """Accounts that have a calls hash (some open call), found by SCAN."""
        prefix, suffix = f"{self._namespace}:{{a:", "}:calls"
        for key in self._redis.scan_iter(match=f"{self._namespace}:{{a:*}}:calls", count=1000, _type="hash"):
            key = key.decode() if isinstance(key, bytes) else key
            if key.startswith(prefix) and key.endswith(suffix):
                yield key[len(prefix):-len(suffix)]

    def events_key(self, account: str) -> str:
        """The stream of the account's settled calls (its CDRs on their way to PostgreSQL)."""
        return self._key(account, "events")

    def _money_keys(self, account: str) -> list[str]:
        return [self._key(account, "calls"), self._key(account, "money"), self._key(account, "settled"),
                self._key(account, "events")]

    def apply_payment(self, account: str, payment_id: int, amount: int) -> bool:
        """Move the live balance by a payment posted in PostgreSQL, once per payment id; False for a repeat."""
        return bool(self._apply_payment(keys=[self._key(account, "money"), self._key(account, "payments")],
                                        args=[payment_id, amount]))

    # ------------------------------------------------------------------ trunks (SPEC §3, §5: channels and CPS)
    def seize_trunk(self, trunk: str, seat: str, *, now: int, max_calls: int, cps: int, hold_until: int) -> str:
        """One of the trunk's channels for `seat` (provider_settlement_id of the call), counted against its CPS
        this second, cluster-wide: TRUNK_SEIZED, TRUNK_AT_CPS or TRUNK_FULL. A trunk without limits needs no
        seat (callers skip this). The seat is freed by release_trunk, or by reap_trunks after hold_until."""
        code = self._seize_trunk(keys=[self._trunk_key(trunk, "calls"), self._trunk_key(trunk, f"cps:{now}")],
                                 args=[seat, max_calls, cps, hold_until])
        return _TRUNK_OUTCOMES[int(code)]

    def release_trunk(self, trunk: str, seat: str) -> None:
        self._redis.hdel(self._trunk_key(trunk, "calls"), seat)

    def busy_channels(self, trunk: str) -> int:
        return int(self._redis.hlen(self._trunk_key(trunk, "calls")))

    def reap_trunks(self, now: int) -> int:
        """Free every trunk seat held past its hold-until time (its call's node died); how many were freed."""
        freed = 0
        for key in self._redis.scan_iter(match=f"{self._namespace}:{{t:*}}:calls", count=1000, _type="hash"):
            freed += int(self._reap_trunk(keys=[key], args=[now]))
        return freed

    def _trunk_key(self, trunk: str, name: str) -> str:
        return f"{self._namespace}:{{t:{trunk}}}:{name}"

    def open_calls(self, account: str) -> int:
        return int(self._redis.hlen(self._key(account, "calls")))

    def credit(self, account: str, amount: int) -> None:
        """Add money to the live balance (payments, tests)."""
        self._redis.hincrby(self._key(account, "money"), "balance", amount)
