-- Admission of one call, atomically (SPEC §4, §5): CPS, concurrent calls, then the grant computed from the
-- balance it reserves against: granted = the largest b <= max_call_seconds with cost(b) <= available
-- (fastpath.reference.rating.max_duration), reserve = cost(granted).
-- A call id is admitted once: one open or already settled is refused (-4), since its settlement would be a
-- repeat and the call free (Kamailio's tm absorbs true retransmissions before they get here). A paid call is
-- refused (-5) while the account's live money has not been restored from PostgreSQL (a Redis that lost its
-- state; the field `restored` marks a money hash the control service wrote): guessing could overdraw.
-- A refused call's CDR (SPEC §9) is written here, atomically with the counting that refused it: the event
-- the KEMI script prepared (ARGV[14], callstate.events.CallEvent) goes to the account's stream, with this
-- script's `outcome` when the refusal is its own (CPS, concurrency, money, restoring); in mode 0 the event
-- already carries the decision's refusal. While the stream holds REFUSAL_BACKLOG entries (the ledger is far
-- behind) refusals are counted in the money hash (`unrecorded_refusals`) instead: a flood must not fill
-- Redis's memory. A duplicate call id records nothing: its call has its CDR.
-- KEYS: calls, money, cps(second), settled, events stream. ARGV: call id, cps limit, call limit, credit
-- limit, mode (0: count only - the decision refused the call, 1: grant and reserve, 2: grant without
-- reserving), max call seconds, connect fee, included seconds, rate per minute, initial increment, increment,
-- now (epoch seconds), node (the Kamailio node's id), the refusal's event ('' to record none).
-- Returns {code, granted, reserve, available}; the calls hash keeps each open call as JSON:
-- {r = reserve, g = granted, t = admitted at, n = node, c = the customer's terms} (callstate.store.OpenCall).
-- #include cost
local REFUSAL_BACKLOG = 100000

local function refuse(code, available)
  local event = ARGV[14]
  if event and event ~= '' then
    if redis.call('XLEN', KEYS[5]) >= REFUSAL_BACKLOG then
      redis.call('HINCRBY', KEYS[2], 'unrecorded_refusals', 1)
    elseif code == 0 then
      redis.call('XADD', KEYS[5], '*', 'event', event)
    else
      redis.call('XADD', KEYS[5], '*', 'event', event, 'outcome', code)
    end
  end
  return {code, 0, 0, available or 0}
end

if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1 then
  return {-4, 0, 0, 0}
end
local cps = tonumber(ARGV[2])
if cps > 0 then
  local n = redis.call('INCR', KEYS[3])
  if n == 1 then redis.call('EXPIRE', KEYS[3], 2) end
  if n > cps then return refuse(-1) end
end
local limit = tonumber(ARGV[3])
if limit > 0 and redis.call('HLEN', KEYS[1]) >= limit then return refuse(-2) end
local mode = ARGV[5]
if mode == '0' then return refuse(0) end
local max_seconds = tonumber(ARGV[6])
local terms = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])}
local free = terms[1] == 0 and terms[3] == 0
if not free and redis.call('HEXISTS', KEYS[2], 'restored') == 0 then return refuse(-5) end
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
if granted <= 0 then return refuse(-3, available) end
local reserve = cost(granted, terms)
if mode == '1' then
  redis.call('HINCRBY', KEYS[2], 'reserved', int(reserve))
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({r = int(reserve), g = int(granted), t = ARGV[12], n = ARGV[13],
             c = {ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]}}))
end
return {1, granted, reserve, available}
