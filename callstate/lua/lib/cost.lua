-- cost(b, terms): what `b` billable seconds cost under terms {connect_fee, included_seconds, rate_per_min,
-- initial_increment, increment} (SPEC §4, fastpath.reference.rating.cost): one rounding, up, to the micro.
-- Integer-exact in Lua's doubles while every value stays below 2^53: rate_per_min is split as 60q + r so that
-- charged * rate / 60 never forms a product above ~1.5e15.
local function cost(b, terms)
  if b <= 0 then return 0 end
  local fee, included, rate = terms[1], terms[2], terms[3]
  local initial, increment = terms[4], terms[5]
  local rest = b - included
  local charged = 0
  if rest <= 0 then
    charged = 0
  elseif rest <= initial then
    charged = initial
  else
    charged = initial + math.ceil((rest - initial) / increment) * increment
  end
  local rate_q = math.floor(rate / 60)
  return fee + charged * rate_q + math.ceil(charged * (rate - 60 * rate_q) / 60)
end

-- A number as Redis and JSON must carry it: a plain integer string, never exponent notation.
local function int(n)
  return string.format('%d', n)
end
