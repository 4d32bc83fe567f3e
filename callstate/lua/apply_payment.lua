-- A payment posted in PostgreSQL moves the live balance once per payment id.
-- KEYS: money, payments applied. ARGV: payment id, amount. Returns 1 when applied now, 0 when it already was.
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'balance', ARGV[2])
return 1
