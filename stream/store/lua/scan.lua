-- scan.lua: exact days-active distribution and lifecycle counts from the per-day activity
-- bitmaps of a slice of user numbers, for "today" T and for T - 1. Read-only.
--
-- KEYS[1]  the shard's offsets hash (routes the call; every key here shares its tag)
-- ARGV[1]  key prefix of the shard, ARGV[2] first byte, ARGV[3] last byte (inclusive) of
--          the bitmaps: users numbered 8 x first .. 8 x last + 7
-- ARGV[4]  T, the local day number of today
-- Returns, for T then T - 1, 41 counts: users active on exactly k of the 7 days ending
-- there (k = 1..7), on exactly k of the 30 days (k = 1..30), then new, returning,
-- resurrecting and dormant users (definitions in the README; HORIZON below).

local tag = ARGV[1]
local first, last = tonumber(ARGV[2]), tonumber(ARGV[3])
local T = tonumber(ARGV[4])
-- Days before a day that tell a resurrecting user from a new one (the bitmaps are kept
-- 48 days: T - 1 - 45 is the oldest read).
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

-- who: user number -> set of its active days among oldest..T
local who = {}
for d = oldest, T do
  local chunk = redis.call('GETRANGE', tag .. K.a .. d, first, last)
  for p = 1, #chunk do
    local byte = string.byte(chunk, p)
    if byte ~= 0 then
      -- bit 0 of a Redis bitmap is the most significant bit of its first byte
      local user = (first + p - 1) * 8 + 7
      while byte > 0 do
        if byte % 2 == 1 then
          local on = who[user]
          if not on then on = {}; who[user] = on end
          on[d] = true
        end
        byte = math.floor(byte / 2)
        user = user - 1
      end
    end
  end
end
for _, on in pairs(who) do
  count(on, T, 0)
  count(on, T - 1, 41)
end
return out
