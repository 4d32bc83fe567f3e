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

from dataclasses import dataclass

import redis

from fastpath import snapshot_format as fmt

# Outcomes of admit(); the SIP answers are the caller's business (SPEC §8).
ADMITTED = "admitted"
CPS_EXCEEDED = "cps"
CONCURRENCY_EXCEEDED = "concurrency"
INSUFFICIENT = "insufficient"
COUNTED = "counted"  # passed CPS and concurrency; the call was refused later, nothing reserved

SETTLED_TTL_SECONDS = 7 * 86_400  # how long a settled call id is remembered against retries

# KEYS: calls, money, cps(second). ARGV: call id, cps limit, call limit, reserve, credit limit, admit?(1/0)
_ADMIT = """
local reserved = redis.call('HGET', KEYS[1], ARGV[1])
if reserved then return {1, tonumber(reserved)} end
local cps = tonumber(ARGV[2])
if cps > 0 then
  local n = redis.call('INCR', KEYS[3])
  if n == 1 then redis.call('EXPIRE', KEYS[3], 2) end
  if n > cps then return {-1, 0} end
end
local limit = tonumber(ARGV[3])
if limit > 0 and redis.call('HLEN', KEYS[1]) >= limit then return {-2, 0} end
if ARGV[6] ~= '1' then return {0, 0} end
local money = redis.call('HMGET', KEYS[2], 'balance', 'reserved')
local available = tonumber(money[1] or '0') + tonumber(ARGV[5]) - tonumber(money[2] or '0')
local reserve = tonumber(ARGV[4])
if reserve > available then return {-3, available} end
redis.call('HINCRBY', KEYS[2], 'reserved', reserve)
redis.call('HSET', KEYS[1], ARGV[1], reserve)
return {1, reserve}
"""

# KEYS: calls, money, settled, events stream. ARGV: call id, cost, event field/value pairs...
_SETTLE = """
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return 0 end
local reserved = redis.call('HGET', KEYS[1], ARGV[1])
if reserved then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HINCRBY', KEYS[2], 'reserved', 0 - tonumber(reserved))
end
redis.call('HINCRBY', KEYS[2], 'balance', 0 - tonumber(ARGV[2]))  -- never '-0', which HINCRBY refuses
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('XADD', KEYS[4], '*', unpack(ARGV, 4))
return 1
"""


@dataclass(frozen=True)
class Admission:
    outcome: str
    amount: int = 0  # admitted: the reservation; insufficient: what was available


class Admissions:
    """The per-call Redis side of one stack (namespace)."""

    def __init__(self, client: redis.Redis, namespace: str = fmt.DEFAULT_NAMESPACE):
        self._redis = client
        self._namespace = namespace
        self._admit = client.register_script(_ADMIT)
        self._settle = client.register_script(_SETTLE)

    def _key(self, account: str, name: str) -> str:
        return f"{self._namespace}:{{a:{account}}}:{name}"

    def available(self, account: str, credit_limit: int) -> int:
        balance, reserved = self._redis.hmget(self._key(account, "money"), "balance", "reserved")
        return int(balance or 0) + credit_limit - int(reserved or 0)

    def admit(self, account: str, call_id: str, *, now: int, cps: int, max_calls: int, reserve: int,
              credit_limit: int, decided: bool = True) -> Admission:
        """CPS, then concurrent calls, then (when the decision routes the call) reserve its cost."""
        code, amount = self._admit(
            keys=[self._key(account, "calls"), self._key(account, "money"), self._key(account, f"cps:{now}")],
            args=[call_id, cps, max_calls, reserve, credit_limit, 1 if decided else 0],
        )
        outcome = {1: ADMITTED, -1: CPS_EXCEEDED, -2: CONCURRENCY_EXCEEDED, -3: INSUFFICIENT, 0: COUNTED}[code]
        return Admission(outcome, int(amount))

    def settle(self, account: str, call_id: str, cost: int, event: dict[str, str | int]) -> bool:
        """Release the call's reservation and debit its cost, once per call id; False for a repeat."""
        pairs = [str(v) for item in event.items() for v in item]
        done = self._settle(
            keys=[self._key(account, "calls"), self._key(account, "money"), self._key(account, "settled"),
                  self._key(account, "events")],
            args=[call_id, cost, SETTLED_TTL_SECONDS, *pairs],
        )
        return bool(done)

    def open_calls(self, account: str) -> int:
        return int(self._redis.hlen(self._key(account, "calls")))

    def credit(self, account: str, amount: int) -> None:
        """Add money to the live balance (payments, tests)."""
        self._redis.hincrby(self._key(account, "money"), "balance", amount)
