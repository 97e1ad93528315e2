-- segments.lua: the value registry of segment dimensions. A value is added to its
-- dimension's set only while the set holds fewer than the limit, so the first values
-- folded win and the set (hence Prometheus cardinality) stays bounded.
--
-- KEYS     one registry set per dimension (same hash tag), in the order of ARGV's dims
-- ARGV[1]  the limit; ARGV[2], ARGV[3] ... dimension, value pairs in the order met,
--          dimension given as the 1-based index of its key in KEYS
-- Returns, per key, its members after the call.

local limit = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local key = KEYS[tonumber(ARGV[i])]
  if redis.call('SISMEMBER', key, ARGV[i + 1]) == 0 and redis.call('SCARD', key) < limit then
    redis.call('SADD', key, ARGV[i + 1])
  end
end
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('SMEMBERS', key)
end
return out
