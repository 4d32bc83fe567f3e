-- Notes that an open call was answered (once), and over which route: the reaper then knows how long it may
-- have lasted and what its provider charges, should its node die.
-- KEYS: calls. ARGV: call id, answered at (epoch seconds, "s.micros"), route (JSON {pv = provider, pt = the
-- provider's terms, tr = trunk, gw = gateway}, or "-" for a call to one of our devices). Returns 1 when marked.
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return 0 end
local call = cjson.decode(entry)
if call.a then return 0 end
call.a = ARGV[2]
if ARGV[3] ~= '' and ARGV[3] ~= '-' then call.p = cjson.decode(ARGV[3]) end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(call))
return 1
