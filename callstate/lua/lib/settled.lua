-- An account's settled call ids, remembered for a window (a sorted set scored by the second each settled) so
-- that a retried or late settlement, and a reused Call-ID, is a repeat - while the set holds only the window's
-- calls (a plain set whose expiry each settlement pushed back grew without end on a busy account).
local function is_settled(key, id)
  return redis.call('ZSCORE', key, id) ~= false
end

local function remember_settled(key, id, window)
  local now = tonumber(redis.call('TIME')[1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - tonumber(window))
  local added = redis.call('ZADD', key, 'NX', now, id)
  redis.call('EXPIRE', key, window)
  return added == 1
end
