-- One channel of a trunk for one call, counted against the trunk's CPS this second (SPEC §5), cluster-wide.
-- KEYS: the trunk's seats (call -> hold-until epoch second), its cps(second). ARGV: seat id, channel limit,
-- cps limit, hold until. Returns 1: seized (or already held by this call), -1: at its CPS limit, -2: every
-- channel busy.
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
