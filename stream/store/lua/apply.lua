-- apply.lua: fold one batch's exact writes for one shard, atomically with the batch's
-- Kafka offsets. Redis runs a script to completion without interleaving, so either the
-- whole batch and its offsets land, or nothing does.
--
-- KEYS[1]  the shard's offsets hash; its hash tag routes the call in Redis Cluster, and
--          every other key touched here carries the same tag (same slot).
-- ARGV[1]  msgpack map built by stream/store/wire.py (`encode_apply`): its keys are the
--          PLAN_* constants there, each documented there once (t prefix of the shard,
--          o offsets, e totals, b / bf / bu activity, u users to number, c customer
--          events, n per-day counters, w / wc / wt witness, il / ws / wl / xs / xl id
--          keys, r / bd retention, cs / sd segments). Key suffixes are `K`'s and the
--          counter fields `F`'s (the prelude stream/store/scripts.py puts first).
-- ARGV[2...]  bitmap fragments (`bf`).
-- An empty digest means the id was already claimed for this message in another shard.
-- Returns {1, applied_events, witness count (-1: unchanged), {user, number, ...} given
-- or found for `u`}; when an offset does not match, {0, src, stored}; when the witness
-- does not match, {2, forgotten} (nothing written; forgotten = 1 when users were erased
-- meanwhile by lua/forget.lua, which deletes every witness of the shard). Decoded by
-- wire.decode_apply.
--
-- Bit numbers: each user gets one in its shard (`n:<bucket>`, from `seq`), never
-- reused, so callers cache them. The witness `w:<token>` counts the calls of one caller
-- that gave it numbers: writes land in Redis in order, so while Redis holds the count of
-- the caller's latest such call it holds every number the caller caches. If Redis lost
-- writes (restarted from an older file, a lagging replica took over), the count is
-- behind, those numbers may have been given again, and the call is refused: the caller
-- forgets its numbers and asks afresh. Tokens of callers given numbers are listed in
-- `wset`, so that lua/forget.lua can find and delete their witnesses.

local plan = cmsgpack.unpack(ARGV[1])
local tag = plan.t
local offkey = KEYS[1]

-- 1. Compare-and-set every partition's offset before writing anything: a mismatch means
--    another worker moved the partition, or Redis lost its last writes; the caller then
--    reloads offsets and re-reads from them.
local o = plan.o
for i = 1, #o, 3 do
  local cur = redis.call('HGET', offkey, o[i])
  local curn = -1
  if cur then curn = tonumber(cur) end
  if curn ~= o[i + 1] then
    return {0, o[i], curn}
  end
end
local witness = tag .. K.w .. plan.w
if plan.wc >= 0 and tonumber(redis.call('GET', witness)) ~= plan.wc then
  return {2, redis.call('DEL', tag .. K.wf .. plan.w)}
end
for i = 1, #o, 3 do
  redis.call('HSET', offkey, o[i], string.format('%d', o[i + 2]))
end

local applied = 0

-- 2. All-time totals.
local tot = tag .. K.tot
for k, v in pairs(plan.e) do
  redis.call('HINCRBY', tot, k, v)
end

-- 3. Event ids: the first message folded with an id wins; its redelivery is itself
--    (`claim_id`, shared with lua/claim.lua). An empty digest: claimed in another shard.
--@include _claim.lua
local function claim(digest, origin, long)
  if digest == '' then return true end
  return claim_id(digest, origin, long)
end

--@include _churn.lua

-- 5. Numbers for the users the caller has none for: HSETNX first, one call for a new
--    user (the usual case), two for one given earlier. Active users get theirs here; a
--    signup's user only once its event is claimed (step 7), so a repeated event id never
--    leaves its user's id in the number map.
local num, given = {}, {}
local seq = tag .. K.seq
local next_n, first_n
local function number_of(bucket, user)
  if next_n == nil then
    next_n = tonumber(redis.call('GET', seq) or '0')
    first_n = next_n
  end
  local n = string.format('%d', next_n)
  if redis.call('HSETNX', tag .. K.n .. bucket, user, n) == 1 then
    next_n = next_n + 1
  else
    n = redis.call('HGET', tag .. K.n .. bucket, user)
  end
  num[user] = n
  given[#given + 1] = user
  given[#given + 1] = n
  return n
end
local u = plan.u
for i = 1, #u, 2 do number_of(u[i], u[i + 1]) end
local bu = plan.bu
local unknown = {}
for i = 1, #bu, 2 do unknown[bu[i]] = bu[i + 1] end

-- 6. Activity: one BITFIELD per day and chunk of users (a call's arguments are bounded
--    by Lua's stack); setting a bit twice is harmless.
local b = plan.b
for i = 1, #b, 2 do
  local key, nums = tag .. K.a .. b[i], b[i + 1]
  for _, user in ipairs(unknown[b[i]] or {}) do nums[#nums + 1] = num[user] end
  for j = 1, #nums, 1500 do
    local args, k = {}, 0
    for n = j, math.min(j + 1499, #nums) do
      args[k + 1] = 'SET'; args[k + 2] = 'u1'; args[k + 3] = nums[n]; args[k + 4] = '1'
      k = k + 4
    end
    redis.call('BITFIELD', key, unpack(args))
  end
  redis.call('EXPIREAT', key, bitmap_expiry(b[i]))
end
-- Fragments: OR-ed in whole (BITOP's cost is the bitmap's length, not the users').
-- The scratch key is deleted before each use as well: a call that failed half-way (out
-- of memory) may have left one, whose bytes outside the new fragment would be ORed in.
local bf = plan.bf
if #bf > 0 then
  local scratch = tag .. K.scratch
  for i = 1, #bf, 3 do
    local key = tag .. K.a .. bf[i]
    redis.call('DEL', scratch)
    redis.call('SETRANGE', scratch, bf[i + 1], ARGV[bf[i + 2]])
    redis.call('BITOP', 'OR', key, key, scratch)
    redis.call('DEL', scratch)
    redis.call('EXPIREAT', key, bitmap_expiry(bf[i]))
  end
end

-- Signup segments of a day (`ssg:<day>` hash: bit number -> packed dim -> value, read by
-- lua/cohort.lua): a user's values are those of their first signup of the day (by ts; on
-- equal ts the greater value), whatever the order the signups arrive in. A hash per day
-- costs memory per signup; a bitmap per segment value and day would cost the length of
-- the whole shard's numbers for each value. Returns dim -> value for `day`.
local function day_segments(srec, day)
  local out, first = {}, {}
  for i = 1, #srec, 3 do
    if srec[i + 1] == day then
      for _, dim in ipairs(plan.sd) do
        local v = srec[i + 2][dim] or 'none'
        local f = first[dim]
        if f == nil or srec[i] < f or (srec[i] == f and v > out[dim]) then
          first[dim], out[dim] = srec[i], v
        end
      end
    end
  end
  return out
end

-- 7. Signups and cancellations.
local c = plan.c
local cs = plan.cs
local scust = tag .. K.scust
for i = 1, #c, 8 do
  if claim(c[i + 6], c[i + 7], true) then
    local user, bkey = c[i], tag .. K.u .. c[i + 1]
    local rec = load(bkey, user)
    local old_churn = churn_steps(rec)
    local skey, srec, old_seg
    if cs then
      skey = tag .. K.us .. c[i + 1]
      local packed = redis.call('HGET', skey, user)
      srec = packed and cmsgpack.unpack(packed) or {}
      old_seg = seg_churn_steps(rec, srec)
    end
    rec[#rec + 1] = c[i + 2]
    rec[#rec + 1] = c[i + 3]
    rec[#rec + 1] = c[i + 4]
    apply_diff(old_churn, churn_steps(rec), F.customers, F.churned)
    redis.call('HSET', bkey, user, cmsgpack.pack(rec))
    if c[i + 3] == 0 then
      local sg = tag .. K.sg .. c[i + 4]
      redis.call('SETBIT', sg, c[i + 5] ~= '' and c[i + 5] or num[user]
                                 or number_of(c[i + 1], user), '1')
      redis.call('EXPIREAT', sg, bitmap_expiry(c[i + 4]))
    end
    if cs then
      local vals = cs[(i - 1) / 8 + 1]
      if c[i + 3] == 0 and next(vals) ~= nil then
        srec[#srec + 1] = c[i + 2]
        srec[#srec + 1] = c[i + 4]
        srec[#srec + 1] = vals
        redis.call('HSET', skey, user, cmsgpack.pack(srec))
        local key = tag .. K.ssg .. c[i + 4]
        redis.call('HSET', key, c[i + 5] ~= '' and c[i + 5] or num[user],
                   cmsgpack.pack(day_segments(srec, c[i + 4])))
        redis.call('EXPIREAT', key, bitmap_expiry(c[i + 4]))
      end
      local new_seg = seg_churn_steps(rec, srec)
      for k, steps in pairs(new_seg) do
        apply_diff(old_seg[k] or {}, steps, F.seg_customers .. k .. ':',
                   F.seg_churned .. k .. ':', scust)
      end
      for k, steps in pairs(old_seg) do
        if not new_seg[k] then
          apply_diff(steps, {}, F.seg_customers .. k .. ':',
                     F.seg_churned .. k .. ':', scust)
        end
      end
    end
    applied = applied + 1
  end
end

-- 8. Per-day counters (visits, conversions, survey answers), summed before writing.
local n = plan.n
local sums, expires = {}, {}
local cdays = {}
for i = 1, #n, 4 do
  if claim(n[i + 2], n[i + 3], false) then
    local key = tag .. K.cnt .. n[i]
    local per = sums[key]
    if not per then
      per = {}
      sums[key] = per
      expires[key] = (n[i] + plan.r + 2) * 86400
      cdays[key] = n[i]
    end
    local f = n[i + 1]
    if type(f) == 'table' then  -- with segments: {field, segment fields...}
      local skey = tag .. K.scnt .. n[i]
      local sper = sums[skey]
      if not sper then
        sper = {}
        sums[skey] = sper
        expires[skey] = expires[key]
      end
      for j = 2, #f do sper[f[j]] = (sper[f[j]] or 0) + 1 end
      f = f[1]
    end
    per[f] = (per[f] or 0) + 1
    applied = applied + 1
  end
end
for key, per in pairs(sums) do
  for f, v in pairs(per) do
    redis.call('HINCRBY', key, f, v)
  end
  -- after the writes: EXPIREAT on a key that does not exist yet does nothing
  redis.call('EXPIREAT', key, expires[key])
end

-- 9. The rolling campaign windows of lua/campaigns.lua, once it has started them:
--    window k (0 or 1) holds the visits and conversions of the 30 days ending
--    `anchor - k` (those from `from` on); a day's counts inside a window go there too, in
--    this same atomic call, so a window always equals the sum of its days' `cnt:` hashes.
local cw0 = redis.call('HMGET', tag .. K.cw .. 0, '@', 'from')
local anchor, from = tonumber(cw0[1]), tonumber(cw0[2]) or 0
if anchor then
  for key, day in pairs(cdays) do
    for k = 0, 1 do
      if day <= anchor - k and day > anchor - k - 30 and day >= from then
        local cw = tag .. K.cw .. k
        for f, v in pairs(sums[key]) do
          local kind = string.sub(f, 1, 2)  -- F.visit and F.conversion are 2 characters
          if kind == F.visit then
            redis.call('HINCRBY', cw, '#v', v)
            redis.call('ZINCRBY', tag .. K.cwv .. k, v, string.sub(f, 3))
          elseif kind == F.conversion then
            redis.call('HINCRBY', cw, '#c', v)
            redis.call('HINCRBY', cw, f, v)
          end
        end
      end
    end
  end
end

if next_n ~= nil and next_n > first_n then redis.call('SET', seq, string.format('%d', next_n)) end
local count = -1
if #given > 0 then
  count = redis.call('INCR', witness)
  redis.call('EXPIRE', witness, plan.wt)
  redis.call('SADD', tag .. K.wset, plan.w)
  redis.call('EXPIRE', tag .. K.wset, plan.wt)
end
return {1, applied, count, given}
