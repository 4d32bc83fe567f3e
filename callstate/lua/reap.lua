-- The open calls of one account that cannot still be running - answered more than granted + grace seconds ago,
-- or never answered and admitted more than ring + grace seconds ago - released and settled at no cost, their
-- events saying so (end_reason "orphaned").
-- KEYS: calls, money, settled, events stream. ARGV: now, grace seconds, settled TTL, account, ring seconds.
-- Returns the call ids.
local now, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
local reaped = {}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local call_id = entries[i]
  local r, g, t, a = string.match(entries[i + 1], '^(-?%d+):(%d+):(%d+):?(%d*)$')
  local deadline = nil
  if a and a ~= '' then deadline = tonumber(a) + tonumber(g) + grace
  elseif t then deadline = tonumber(t) + tonumber(ARGV[5]) + grace end
  if deadline and deadline < now and redis.call('SISMEMBER', KEYS[3], call_id) == 0 then
    redis.call('HDEL', KEYS[1], call_id)
    redis.call('HINCRBY', KEYS[2], 'reserved', 0 - tonumber(r))
    redis.call('SADD', KEYS[3], call_id)
    redis.call('EXPIRE', KEYS[3], ARGV[3])
    redis.call('XADD', KEYS[4], '*', 'event', cjson.encode({call_id = call_id, account = ARGV[4], setup_time = t,
               end_time = tostring(now), billable_seconds = '0', sip_code = '0', customer_cost = '0',
               provider_cost = '0', end_reason = 'orphaned'}))
    reaped[#reaped + 1] = call_id
  end
end
return reaped
