-- A provider's side of a settled call, applied by the ledger from the customer's event: credited once per
-- (customer, call id) - the seat id callstate.events.provider_settlement_id makes.
-- KEYS: the provider's money, its settled ids. ARGV: seat id, amount, settled TTL. Returns 1 when credited now.
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('HINCRBY', KEYS[1], 'balance', ARGV[2])
return 1
