-- firstweek.lua: first-week participation of one shard, exact, from the signup and
-- activity bitmaps (keys.py), for "today" T and for T - 1.
--
-- The cohort of T: users with a signup dated T-37..T-8, each counted once from their
-- earliest such signup day s; a member participated if active on one of s+1..s+7.
-- Walking s upwards, `done` holds the users already counted from an earlier day. The
-- work is a few BITOPs over bitmaps of (users in the shard / 8) bytes per cohort day;
-- the scratch keys share the shard's tag (same slot) and are deleted before returning.
--
-- KEYS[1]  the shard's offsets hash (routes the call; every key here shares its tag)
-- ARGV[1]  key prefix of the shard, ARGV[2] T, the local day number of today
-- Returns {cohort(T), participants(T), cohort(T-1), participants(T-1)}.

local tag = ARGV[1]
local T = tonumber(ARGV[2])
local done, new, act = tag .. K.tmp .. 'fw:done', tag .. K.tmp .. 'fw:new', tag .. K.tmp .. 'fw:act'

local function first_week(t)
  redis.call('DEL', done)
  local cohort, active = 0, 0
  for s = t - 37, t - 8 do
    local sg = tag .. K.sg .. s
    if redis.call('EXISTS', sg) == 1 then
      -- new = sg AND NOT done, as sg XOR (sg AND done): BITOP NOT would stop at the
      -- length of `done`
      redis.call('BITOP', 'AND', new, sg, done)
      redis.call('BITOP', 'XOR', new, sg, new)
      local n = redis.call('BITCOUNT', new)
      if n > 0 then
        cohort = cohort + n
        local days = {}
        for a = s + 1, s + 7 do days[#days + 1] = tag .. K.a .. a end
        redis.call('BITOP', 'OR', act, unpack(days))
        redis.call('BITOP', 'AND', act, act, new)
        active = active + redis.call('BITCOUNT', act)
      end
      redis.call('BITOP', 'OR', done, done, sg)
    end
  end
  return cohort, active
end

local d0, n0 = first_week(T)
local d1, n1 = first_week(T - 1)
redis.call('DEL', done, new, act)
return {d0, n0, d1, n1}
