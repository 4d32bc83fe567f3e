-- An account's live money rebuilt from PostgreSQL after Redis lost it (SPEC §9: Redis is a cache of the book):
-- the book's balance (less the payments not yet pushed, which the ledger pushes next) is added to whatever
-- calls settled here since the loss, the open calls known to Kamailio's dialog tables are reserved again, and
-- the hash is marked `restored`, which lets the admission grant money again. Once per loss: an account
-- already restored is left alone.
-- A call settled here since the loss is not reserved again.
-- KEYS: money, calls, settled. ARGV: balance to add (micros), open calls (JSON [[call id, open call JSON],
-- ...]). Returns 1 when restored now, 0 when it already was.
-- #include settled
if redis.call('HEXISTS', KEYS[1], 'restored') == 1 then return 0 end
redis.call('HINCRBY', KEYS[1], 'balance', ARGV[1])
for _, call in ipairs(cjson.decode(ARGV[2])) do
  if not is_settled(KEYS[3], call[1]) and redis.call('HSETNX', KEYS[2], call[1], call[2]) == 1 then
    redis.call('HINCRBY', KEYS[1], 'reserved', cjson.decode(call[2]).r)
  end
end
redis.call('HSET', KEYS[1], 'restored', '1')
return 1
