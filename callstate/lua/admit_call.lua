-- Admission of one call, atomically (SPEC §4, §5): CPS, concurrent calls, then the grant computed from the
-- balance it reserves against:
-- granted = the largest b <= max_call_seconds with cost(b) <= available (fastpath.reference.rating's
-- max_duration), reserve = cost(granted). Integer-exact in Lua's doubles while every value stays below 2^53:
-- rate_per_min is split as 60q + r so that charged * rate / 60 never forms a product above ~1.5e15.
-- A call id is admitted once: one open or already settled is refused (code -4), since its settlement would be
-- a repeat and the call free (Kamailio's tm absorbs true retransmissions before they get here).
-- KEYS: calls, money, cps(second), settled. ARGV: call id, cps limit, call limit, credit limit, mode (0: count
-- only, 1: grant and reserve, 2: grant without reserving), max call seconds, connect fee, included seconds,
-- rate per minute, initial increment, increment, now (epoch seconds).
-- Returns {code, granted, reserve, available}; the calls hash keeps "reserve:granted:admitted_at" per open call.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1 then
  return {-4, 0, 0, 0}
end
local cps = tonumber(ARGV[2])
if cps > 0 then
  local n = redis.call('INCR', KEYS[3])
  if n == 1 then redis.call('EXPIRE', KEYS[3], 2) end
  if n > cps then return {-1, 0, 0, 0} end
end
local limit = tonumber(ARGV[3])
if limit > 0 and redis.call('HLEN', KEYS[1]) >= limit then return {-2, 0, 0, 0} end
local mode = ARGV[5]
if mode == '0' then return {0, 0, 0, 0} end
local money = redis.call('HMGET', KEYS[2], 'balance', 'reserved')
local available = tonumber(money[1] or '0') + tonumber(ARGV[4]) - tonumber(money[2] or '0')
local max_seconds = tonumber(ARGV[6])
local fee, included, rate = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local initial, increment = tonumber(ARGV[10]), tonumber(ARGV[11])
local rate_q = math.floor(rate / 60)
local rate_r = rate - 60 * rate_q
local function cost(b)
  if b <= 0 then return 0 end
  local rest = b - included
  local charged = 0
  if rest <= 0 then
    charged = 0
  elseif rest <= initial then
    charged = initial
  else
    charged = initial + math.ceil((rest - initial) / increment) * increment
  end
  return fee + charged * rate_q + math.ceil(charged * rate_r / 60)
end
local granted
if fee == 0 and rate == 0 then
  granted = max_seconds
elseif cost(1) > available then
  granted = 0
elseif cost(max_seconds) <= available then
  granted = max_seconds
else
  local low, high = 1, max_seconds
  while high - low > 1 do
    local middle = math.floor((low + high) / 2)
    if cost(middle) <= available then low = middle else high = middle end
  end
  granted = low
end
if granted <= 0 then return {-3, 0, 0, available} end
local reserve = cost(granted)
if mode == '1' then
  redis.call('HINCRBY', KEYS[2], 'reserved', reserve)
  redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d:%d', reserve, granted, ARGV[12]))
end
return {1, granted, reserve, available}
