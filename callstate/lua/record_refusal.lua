-- A refused call's CDR (SPEC §9): its event appended to the account's stream, for the ledger - unless the
-- stream holds REFUSAL_BACKLOG unrecorded entries (the ledger far behind: a refusal flood must not fill
-- Redis's memory); then the refusal is only counted, in the money hash's `unrecorded_refusals`. A settled
-- call's event is always appended (settle.lua).
-- KEYS: events stream, money. ARGV: the event (callstate.events.CallEvent.encode). Returns 1 when recorded.
local REFUSAL_BACKLOG = 100000
if redis.call('XLEN', KEYS[1]) >= REFUSAL_BACKLOG then
  redis.call('HINCRBY', KEYS[2], 'unrecorded_refusals', 1)
  return 0
end
redis.call('XADD', KEYS[1], '*', 'event', ARGV[1])
return 1
