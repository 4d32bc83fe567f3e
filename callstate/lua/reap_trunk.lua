-- Frees the seats of a trunk held past their hold-until time (their call's node died).
-- KEYS: a trunk's seats. ARGV: now. Returns how many were freed.
local freed = 0
local seats = redis.call('HGETALL', KEYS[1])
for i = 1, #seats, 2 do
  if tonumber(seats[i + 1]) < tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], seats[i])
    freed = freed + 1
  end
end
return freed
