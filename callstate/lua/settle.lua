-- Settlement of one call (SPEC §9), once per call id: the reservation released, the customer's cost debited,
-- the call's event appended to the account's stream. The event carries the provider's cost: the ledger
-- credits the provider from it (credit_provider.lua), so debit and credit are decided in this one step.
-- KEYS: calls, money, settled, events stream. ARGV: call id, cost, settled window (seconds), the event (JSON,
-- callstate.events.CallEvent.encode). Returns 1 when settled now, 0 for a repeat.
-- #include settled
if is_settled(KEYS[3], ARGV[1]) then return 0 end
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if entry then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HINCRBY', KEYS[2], 'reserved', 0 - tonumber(cjson.decode(entry).r))
end
redis.call('HINCRBY', KEYS[2], 'balance', 0 - tonumber(ARGV[2]))  -- never '-0', which HINCRBY refuses
remember_settled(KEYS[3], ARGV[1], ARGV[3])
redis.call('XADD', KEYS[4], '*', 'event', ARGV[4])
return 1
