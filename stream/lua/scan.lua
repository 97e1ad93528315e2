-- scan.lua: exact days-active distribution and lifecycle counts from the per-user records
-- of a slice of user buckets, for "today" T and for T - 1. Read-only.
--
-- KEYS[1]  the shard's offsets hash (routes the call; every key here shares its tag)
-- ARGV[1]  key prefix of the shard, ARGV[2] first bucket, ARGV[3] last bucket (inclusive)
-- ARGV[4]  T, the local day number of today
-- Returns, for T then T - 1, 41 counts: users active on exactly k of the 7 days ending
-- there (k = 1..7), on exactly k of the 30 days (k = 1..30), then new, returning,
-- resurrecting and dormant users (definitions in the README; HORIZON below).

local tag = ARGV[1]
local first, last = tonumber(ARGV[2]), tonumber(ARGV[3])
local T = tonumber(ARGV[4])
local BITS, TOP = 48, 2 ^ 48
-- Days before a day that tell a resurrecting user from a new one: the bitmap of a user
-- active on T - 1 reaches back 45 days from it even when L is tomorrow.
local HORIZON = 45
local oldest = T - 1 - HORIZON
local out = {}
for j = 1, 82 do out[j] = 0 end

local function count(on, t, base)
  local c7, c30, prior, earlier = 0, 0, false, false
  for x, _ in pairs(on) do
    local age = t - x
    if age >= 0 and age < 7 then c7 = c7 + 1 end
    if age >= 0 and age < 30 then c30 = c30 + 1 end
    if age >= 1 and age <= 30 then prior = true end
    if age > 30 and age <= HORIZON then earlier = true end
  end
  if c7 > 0 then out[base + c7] = out[base + c7] + 1 end
  if c30 > 0 then out[base + 7 + c30] = out[base + 7 + c30] + 1 end
  local s
  if on[t] then
    if prior then s = 2 elseif earlier then s = 3 else s = 1 end
  elseif on[t - 30] and c30 == 0 then
    s = 4
  end
  if s then out[base + 37 + s] = out[base + 37 + s] + 1 end
end

for b = first, last do
  local flat = redis.call('HGETALL', tag .. 'u:' .. b)
  for i = 2, #flat, 2 do
    local rec = cmsgpack.unpack(flat[i])
    local L = rec[1]
    if L ~= 0 and L >= T - 31 then
      local on, m = {}, rec[2] % TOP
      local d = L
      while m > 0 and d >= oldest do
        local bit = m % 2
        if bit == 1 then on[d] = true end
        m = (m - bit) / 2
        d = d - 1
      end
      count(on, T, 0)
      count(on, T - 1, 41)
    end
  end
end
return out
