-- Settlement of one call (SPEC §9), once per settlement id: the reservation released, the cost debited (a
-- negative cost credits: a provider's side), the call's event appended to the account's stream.
-- KEYS: calls, money, settled, events stream. ARGV: settlement id (the call id), cost, settled TTL, the event
-- (JSON, callstate.events.encode_event). Returns 1 when settled now, 0 for a repeat.
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
