-- sweep.lua: fold difference-array fields older than `cutoff` into one field at `cutoff`,
-- which keeps every prefix sum from `cutoff` on unchanged and the hashes small.
--
-- KEYS[1]  the shard's offsets hash (routes the call; every key here shares its tag)
-- ARGV[1]  key prefix of the shard, e.g. "es:{es0}:"
-- ARGV[2]  cutoff day for difference arrays
-- Returns the number of fields folded.

local tag = ARGV[1]
local cutoff = tonumber(ARGV[2])
local folded = 0

-- `cust`, and `scust` (by segment: `sD:<dim>:<value>:<day>`; the day follows the last ':')
for _, suffix in ipairs({K.cust, K.scust}) do
  local cust = tag .. suffix
  local flat = redis.call('HGETALL', cust)
  local sums = {}
  local old = {}
  for i = 1, #flat, 2 do
    local name, day = string.match(flat[i], '^(.+):(%-?%d+)$')
    if name and tonumber(day) < cutoff then
      sums[name] = (sums[name] or 0) + tonumber(flat[i + 1])
      old[#old + 1] = flat[i]
    end
  end
  for i = 1, #old, 500 do
    redis.call('HDEL', cust, unpack(old, i, math.min(i + 499, #old)))
  end
  for name, total in pairs(sums) do
    if total ~= 0 then
      redis.call('HINCRBY', cust, name .. ':' .. cutoff, total)
    end
  end
  folded = folded + #old
end

return folded
