-- Notes that an open call was answered: appends the answer time to its "reserve:granted:admitted_at" once,
-- so that the reaper counts the granted seconds from the answer.
-- KEYS: calls. ARGV: call id, answered at (epoch second). Returns 1 when marked now.
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry or not string.match(entry, '^-?%d+:%d+:%d+$') then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], entry .. ':' .. ARGV[2])
return 1
