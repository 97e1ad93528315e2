-- sweep.lua: keep per-user memory proportional to recent users, not to all users ever.
--
-- 1. Deletes user records that hold nothing a figure can still need: no signup or
--    cancellation, and no activity in the last 48 days (the bitmap's reach). Customer
--    records are kept: customer status has no age limit.
-- 2. Folds difference-array fields older than `cutoff` into one field at `cutoff`, which
--    keeps every prefix sum from `cutoff` on unchanged.
--
-- KEYS[1]  the shard's offsets hash (routes the call; every key here shares its tag)
-- ARGV[1]  key prefix of the shard, e.g. "es:{es0}:"
-- ARGV[2]  first bucket, ARGV[3] last bucket (inclusive)
-- ARGV[4]  oldest day whose activity still matters (today - 48)
-- ARGV[5]  cutoff day for difference arrays (0 = do not compact)
-- Returns {records deleted, fields folded}.

local tag = ARGV[1]
local first, last = tonumber(ARGV[2]), tonumber(ARGV[3])
local oldest = tonumber(ARGV[4])
local cutoff = tonumber(ARGV[5])
local deleted, folded = 0, 0

for b = first, last do
  local key = tag .. 'u:' .. b
  local flat = redis.call('HGETALL', key)
  local stale = {}
  for i = 1, #flat, 2 do
    local rec = cmsgpack.unpack(flat[i + 1])
    if #rec <= 2 and rec[1] < oldest then
      stale[#stale + 1] = flat[i]
    end
  end
  for i = 1, #stale, 500 do
    redis.call('HDEL', key, unpack(stale, i, math.min(i + 499, #stale)))
  end
  deleted = deleted + #stale
end

-- `cust`, and `scust` (by segment: `sD:<dim>:<value>:<day>`; the day follows the last ':')
for _, suffix in ipairs(cutoff > 0 and {'cust', 'scust'} or {}) do
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

return {deleted, folded}
