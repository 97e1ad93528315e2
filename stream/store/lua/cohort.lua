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
-- ARGV[3]  optional: 'segments', to count by segment instead (day t only): a member
--          counts in the segment values `ssg:<s>` holds for them (those of their first
--          signup of day s; apply.lua), one value per dimension
-- Returns, without segments, {cohort, retained} for each N in order for t, then for
-- t - 1 (16 numbers); with segments, {N, dimension, value, cohort, retained, ...}.

local tag = ARGV[1]
local T = tonumber(ARGV[2])
local by_segment = ARGV[3] == 'segments'
local done, new, kept = tag .. K.tmp .. 'co:done', tag .. K.tmp .. 'co:new', tag .. K.tmp .. 'co:kept'
local DAYS = {1, 7, 14, 30}

-- Adds the cohort's {cohort, retained} to into[base + 1], into[base + 2]; with segments,
-- to seg[dim][value] = {cohort, retained} instead.
local function cohort(t, n, into, base, seg)
  redis.call('DEL', done)
  local last = t - 1 - n
  for s = last - 6, last do
    local sg = tag .. K.sg .. s
    if redis.call('EXISTS', sg) == 1 then
      -- new = sg AND NOT done, as sg XOR (sg AND done): BITOP NOT would stop at the
      -- length of `done`
      redis.call('BITOP', 'AND', new, sg, done)
      redis.call('BITOP', 'XOR', new, sg, new)
      local c = redis.call('BITCOUNT', new)
      if c > 0 then
        redis.call('BITOP', 'AND', kept, new, tag .. K.a .. (s + n))
        if not seg then
          into[base + 1] = into[base + 1] + c
          into[base + 2] = into[base + 2] + redis.call('BITCOUNT', kept)
        else
          -- the day's signups with segments: far fewer than the shard's users
          local h = redis.call('HGETALL', tag .. K.ssg .. s)
          for i = 1, #h, 2 do
            if redis.call('GETBIT', new, h[i]) == 1 then
              local r = redis.call('GETBIT', kept, h[i])
              for dim, v in pairs(cmsgpack.unpack(h[i + 1])) do
                local per = seg[dim]
                if not per then per = {}; seg[dim] = per end
                local cr = per[v]
                if not cr then cr = {0, 0}; per[v] = cr end
                cr[1] = cr[1] + 1
                cr[2] = cr[2] + r
              end
            end
          end
        end
      end
      redis.call('BITOP', 'OR', done, done, sg)
    end
  end
end

local out = {}
if not by_segment then
  for i = 1, 16 do out[i] = 0 end
  for k, n in ipairs(DAYS) do
    cohort(T, n, out, 2 * (k - 1))
    cohort(T - 1, n, out, 8 + 2 * (k - 1))
  end
else
  for _, n in ipairs(DAYS) do
    local seg = {}
    cohort(T, n, nil, 0, seg)
    for dim, per in pairs(seg) do
      for v, cr in pairs(per) do
        out[#out + 1] = n
        out[#out + 1] = dim
        out[#out + 1] = v
        out[#out + 1] = cr[1]
        out[#out + 1] = cr[2]
      end
    end
  end
end
redis.call('DEL', done, new, kept)
return out
