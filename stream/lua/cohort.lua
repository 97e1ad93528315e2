-- cohort.lua: day-N retention of signup cohorts in one shard, exact, from the signup and
-- activity bitmaps (keys.py), for N = 1, 7, 14, 30.
--
-- The cohort of N as of day t: users with a signup dated on one of the 7 days
-- t-1-N-6 .. t-1-N, each counted once from their earliest such signup day s; a member
-- is retained when active on day s+N exactly. Walking s upwards, `done` holds the users
-- already counted from an earlier day of the cohort, so the order in which events
-- arrived never matters. The scratch keys share the shard's tag (same slot) and are
-- deleted before returning.
--
-- KEYS[1]  the shard's offsets hash (routes the call; every key here shares its tag)
-- ARGV[1]  key prefix of the shard, ARGV[2] t, the local day number of "today"
-- ARGV[3..] optional segments `<dim>:<value>`: then only day t is computed, and a member
--          counts in the segment whose signup bitmap of day s (`ssg:<dim>:<value>:<s>`,
--          the segment of the user's first signup that day) holds them
-- Returns, without segments, {cohort, retained} for each N in order for t, then for
-- t - 1 (16 numbers); with segments, {cohort, retained} for each N and each segment in
-- the order given.

local tag = ARGV[1]
local T = tonumber(ARGV[2])
local pairs_ = {}
for i = 3, #ARGV do pairs_[#pairs_ + 1] = ARGV[i] end
local done, new, kept, tmp = tag .. 'tmp:co:done', tag .. 'tmp:co:new',
  tag .. 'tmp:co:kept', tag .. 'tmp:co:tmp'
local DAYS = {1, 7, 14, 30}

-- Adds to `into` (flat {cohort, retained} per segment, or one pair without segments).
local function cohort(t, n, into, base)
  redis.call('DEL', done)
  local last = t - 1 - n
  for s = last - 6, last do
    local sg = tag .. 'sg:' .. s
    if redis.call('EXISTS', sg) == 1 then
      -- new = sg AND NOT done, as sg XOR (sg AND done): BITOP NOT would stop at the
      -- length of `done`
      redis.call('BITOP', 'AND', new, sg, done)
      redis.call('BITOP', 'XOR', new, sg, new)
      if redis.call('BITCOUNT', new) > 0 then
        redis.call('BITOP', 'AND', kept, new, tag .. 'a:' .. (s + n))
        if #pairs_ == 0 then
          into[base + 1] = into[base + 1] + redis.call('BITCOUNT', new)
          into[base + 2] = into[base + 2] + redis.call('BITCOUNT', kept)
        else
          for j, pair in ipairs(pairs_) do
            local ssg = tag .. 'ssg:' .. pair .. ':' .. s
            if redis.call('EXISTS', ssg) == 1 then
              local at = base + 2 * (j - 1)
              redis.call('BITOP', 'AND', tmp, new, ssg)
              into[at + 1] = into[at + 1] + redis.call('BITCOUNT', tmp)
              redis.call('BITOP', 'AND', tmp, kept, ssg)
              into[at + 2] = into[at + 2] + redis.call('BITCOUNT', tmp)
            end
          end
        end
      end
      redis.call('BITOP', 'OR', done, done, sg)
    end
  end
end

local out = {}
if #pairs_ == 0 then
  for i = 1, 16 do out[i] = 0 end
  for k, n in ipairs(DAYS) do
    cohort(T, n, out, 2 * (k - 1))
    cohort(T - 1, n, out, 8 + 2 * (k - 1))
  end
else
  local width = 2 * #pairs_
  for i = 1, width * #DAYS do out[i] = 0 end
  for k, n in ipairs(DAYS) do cohort(T, n, out, width * (k - 1)) end
end
redis.call('DEL', done, new, kept, tmp)
return out
