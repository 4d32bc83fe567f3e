-- The open calls of one account that cannot still be running, settled at what they cost up to the last moment
-- they were known alive (SPEC §9: never free, never their whole grant when nobody knows), their events saying
-- end_reason "orphaned":
-- - their node is dead (no heartbeat for node_dead seconds): an answered call is charged from its answer to
--   the node's last heartbeat (it would have been settled had it ended before), at least one second, at most
--   its grant; an unanswered one costs nothing;
-- - their node restarted after they were admitted and did not load them from its dialog table (the node writes
--   its dialogs a second or two late: a call answered just before a crash is lost): charged likewise, up to
--   the node's last heartbeat before its restart. A node restarting keeps the calls it loaded (survivors);
-- - their node is alive but the call outlived any end it could have (answered: its grant + grace seconds ago;
--   unanswered: the ring time + grace): its end was lost; answered, it is charged its grant.
-- KEYS: calls, money, settled, events stream. ARGV: now, grace seconds, settled window, account, ring seconds,
-- nodes (JSON {node = last heartbeat, epoch seconds}), node_dead seconds, restarts (JSON {node = {started, last
-- heartbeat before}}), survivors (JSON {call id = 1}: the calls restarted nodes loaded).
-- Returns {call id, trunk or ""} per reaped call (the caller frees the trunk's channel: another slot).
-- #include cost
-- #include settled
local now, grace, ring = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[5])
local nodes, node_dead = cjson.decode(ARGV[6]), tonumber(ARGV[7])
local restarts, survivors = cjson.decode(ARGV[8] or '{}'), cjson.decode(ARGV[9] or '{}')

local function numbers(strings)
  local out = {}
  for k = 1, #strings do out[k] = tonumber(strings[k]) end
  return out
end

-- The moment to charge the call up to, or nil while it may still be running.
local function last_alive(call_id, call, answered)
  local admitted, granted = tonumber(call.t), tonumber(call.g)
  local restart = restarts[call.n or '']
  if restart and admitted < tonumber(restart[1]) and not survivors[call_id] then return tonumber(restart[2]) end
  local heartbeat = tonumber(nodes[call.n or ''] or admitted)
  if now - heartbeat > node_dead then return heartbeat end
  if answered and answered + granted + grace < now then return answered + granted end
  if not answered and admitted + ring + grace < now then return now end
  return nil
end

local function settle_orphan(call_id, call, answered, ended)
  local billable = 0
  if answered then billable = math.min(math.max(math.ceil(ended - answered), 1), tonumber(call.g)) end
  local customer_cost = cost(billable, numbers(call.c))
  local route = call.p or {}
  local provider_cost = route.pt and cost(billable, numbers(route.pt)) or 0
  redis.call('HINCRBY', KEYS[2], 'balance', 0 - customer_cost)
  remember_settled(KEYS[3], call_id, ARGV[3])
  redis.call('XADD', KEYS[4], '*', 'event', cjson.encode({
    call_id = call_id, account = ARGV[4], setup_time = call.t, answer_time = call.a or '',
    end_time = string.format('%.3f', answered and ended or now), billable_seconds = int(billable),
    sip_code = answered and '200' or '0', customer_cost = int(customer_cost), provider = route.pv or '',
    trunk = route.tr or '', gateway = route.gw or '', provider_cost = int(provider_cost), end_reason = 'orphaned'}))
  return route.tr or ''
end

local reaped = {}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local call_id, call = entries[i], cjson.decode(entries[i + 1])
  local answered = call.a and tonumber(call.a)
  if is_settled(KEYS[3], call_id) then
    -- Settled already (a restore raced its end): only its reservation and slot are left to free.
    redis.call('HDEL', KEYS[1], call_id)
    redis.call('HINCRBY', KEYS[2], 'reserved', 0 - tonumber(call.r))
  else
    local ended = last_alive(call_id, call, answered)
    if ended then
      redis.call('HDEL', KEYS[1], call_id)
      redis.call('HINCRBY', KEYS[2], 'reserved', 0 - tonumber(call.r))
      reaped[#reaped + 1] = {call_id, settle_orphan(call_id, call, answered, ended)}
    end
  end
end
return reaped
