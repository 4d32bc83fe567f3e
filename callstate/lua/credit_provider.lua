-- A provider's side of a settled call, applied by the ledger from the customer's event: credited once per
-- (customer, call id) - the seat id callstate.events.provider_settlement_id makes.
-- KEYS: the provider's money, its settled ids. ARGV: seat id, amount, settled window (seconds). Returns 1 when
-- credited now.
-- #include settled
if not remember_settled(KEYS[2], ARGV[1], ARGV[3]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'balance', ARGV[2])
return 1
