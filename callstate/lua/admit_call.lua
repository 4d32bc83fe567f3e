-- Admission of one call, atomically (SPEC §4, §5): CPS, concurrent calls, then the grant computed from the
-- balance it reserves against: granted = the largest b <= max_call_seconds with cost(b) <= available
-- (fastpath.reference.rating.max_duration), reserve = cost(granted).
-- A call id is admitted once: one open or already settled is refused (-4), since its settlement would be a
-- repeat and the call free (Kamailio's tm absorbs true retransmissions before they get here). A paid call is
-- refused (-5) while the account's live money has not been restored from PostgreSQL (a Redis that lost its
-- state; the field `restored` marks a money hash the control service wrote): guessing could overdraw.
-- KEYS: calls, money, cps(second), settled. ARGV: call id, cps limit, call limit, credit limit, mode (0: count
-- only - the decision refused the call, 1: grant and reserve, 2: grant without reserving), max call seconds,
-- connect fee, included seconds, rate per minute, initial increment, increment, now (epoch seconds), node (the
-- Kamailio node's id).
-- Returns "code:granted:reserve:available" (one string: the KEMI script reads one value, not four); the calls
-- hash keeps each open call as JSON: {r = reserve, g = granted, t = admitted at, n = node, c = the customer's
-- terms} (callstate.store.OpenCall).
-- #include cost
local function reply(code, granted, reserve, available)
  return string.format('%d:%d:%d:%d', code, granted, reserve, available)
end

-- #include settled
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or is_settled(KEYS[4], ARGV[1]) then
  return reply(-4, 0, 0, 0)
end
local cps = tonumber(ARGV[2])
if cps > 0 then
  local n = redis.call('INCR', KEYS[3])
  if n == 1 then redis.call('EXPIRE', KEYS[3], 2) end
  if n > cps then return reply(-1, 0, 0, 0) end
end
local limit = tonumber(ARGV[3])
if limit > 0 and redis.call('HLEN', KEYS[1]) >= limit then return reply(-2, 0, 0, 0) end
local mode = ARGV[5]
if mode == '0' then return reply(0, 0, 0, 0) end
local max_seconds = tonumber(ARGV[6])
local terms = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])}
local free = terms[1] == 0 and terms[3] == 0
if not free and redis.call('HEXISTS', KEYS[2], 'restored') == 0 then return reply(-5, 0, 0, 0) end
local money = redis.call('HMGET', KEYS[2], 'balance', 'reserved')
local available = tonumber(money[1] or '0') + tonumber(ARGV[4]) - tonumber(money[2] or '0')
local granted
if free then
  granted = max_seconds
elseif cost(1, terms) > available then
  granted = 0
elseif cost(max_seconds, terms) <= available then
  granted = max_seconds
else
  local low, high = 1, max_seconds
  while high - low > 1 do
    local middle = math.floor((low + high) / 2)
    if cost(middle, terms) <= available then low = middle else high = middle end
  end
  granted = low
end
if granted <= 0 then return reply(-3, 0, 0, available) end
local reserve = cost(granted, terms)
if mode == '1' then
  redis.call('HINCRBY', KEYS[2], 'reserved', int(reserve))
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({r = int(reserve), g = int(granted), t = ARGV[12], n = ARGV[13],
             c = {ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]}}))
end
return reply(1, granted, reserve, available)
