-- A Kamailio node (re)started: its start and the last heartbeat of its previous life are noted, then it beats.
-- The reaper settles the calls the previous life held that the new one did not load from its dialog table
-- (they were too young to be written): charged up to that last heartbeat (callstate/lua/reap.lua).
-- kamailio.cfg runs it with EVAL (once per start: Redis may not hold the scripts yet), so no comment may end
-- a line that holds code. KEYS: nodes (node -> last heartbeat), node starts (node -> "started:last heartbeat
-- before"). ARGV: node, now (epoch seconds), when the process started (Kamailio's $Tb; the first heartbeat comes
-- up to an interval later, and calls admitted in between belong to the new life). Returns 1.
local before = redis.call('HGET', KEYS[1], ARGV[1]) or ARGV[2]
local started = ARGV[3] or ARGV[2]
redis.call('HSET', KEYS[2], ARGV[1], started .. ':' .. before)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
