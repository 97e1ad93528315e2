-- apply.lua: fold one batch's exact writes for one shard, atomically with the batch's
-- Kafka offsets. Redis runs a script to completion without interleaving, so either the
-- whole batch and its offsets land, or nothing does.
--
-- KEYS[1]  the shard's offsets hash; its hash tag routes the call in Redis Cluster, and
--          every other key touched here carries the same tag (same slot).
-- ARGV[1]  msgpack map built by store.py:
--   t   key prefix of the shard, e.g. "es:{es0}:"
--   o   flat list: src, expected offset (-1 = none), new offset, ...
--   e   map totals field -> increment (`e:<type>`, `dl:<reason>`, `late:<age>`,
--       `ig:<reason>`)
--   b   flat list: day, {bit numbers of the users newly active that day}, day, ...
--       (numbers as decimal strings: Redis would format a Lua number for every call)
--   bf  flat list: day, first byte, i, day, ...: ARGV[i] is a bitmap fragment (the bytes
--       from the first byte on, with the bits of more users newly active that day set;
--       in ARGV as msgpack here would turn bytes into a type cmsgpack does not read)
--   bu  flat list: day, {users newly active that day whose number the caller lacks}, ...
--   u   flat list: bucket, user, ... of every active user the caller has no number for
--       (a signup's user without one is numbered in step 7, once its event is claimed)
--   c   flat list: user, bucket, ts_ms, kind, day, bit number ('' when the caller has
--       none), digest, origin, ...  (customer events)
--   w, wc, wt  the caller's witness token, its expected count (-1: the caller has no
--       number cached) and seconds the witness outlives the caller's last call
--   n   flat list: day, field, digest, origin, ...        (per-day counters)
--   il  id-key suffixes to look in; ws / wl short / long id key to write; xs / xl expiry
--   r   retention days of per-day keys, bd of the activity and signup bitmaps
--   cs  with segments only: per customer event of `c`, its segment values (dimension ->
--       value; empty for a cancellation); counter fields of `n` are then lists
--       {field, segment field...}, the segment fields going to `scnt:<day>`
-- An empty digest means the id was already claimed for this message in another shard.
-- Returns {1, applied_events, witness count (-1: unchanged), {user, number, ...} given
-- or found for `u`}; when an offset does not match, {0, src, stored}; when the witness
-- does not match, {2, forgotten} (nothing written; forgotten = 1 when users were erased
-- meanwhile by lua/forget.lua, which deletes every witness of the shard).
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
local witness = tag .. 'w:' .. plan.w
if plan.wc >= 0 and tonumber(redis.call('GET', witness)) ~= plan.wc then
  return {2, redis.call('DEL', tag .. 'wf:' .. plan.w)}
end
for i = 1, #o, 3 do
  redis.call('HSET', offkey, o[i], string.format('%d', o[i + 2]))
end

local applied = 0

-- 2. All-time totals.
local tot = tag .. 'tot'
for k, v in pairs(plan.e) do
  redis.call('HINCRBY', tot, k, v)
end

-- 3. Event ids: the first message folded with an id wins; its redelivery is itself.
local function claim(digest, origin, long)
  if digest == '' then return true end
  for _, g in ipairs(plan.il) do
    local seen = redis.call('HGET', tag .. g, digest)
    if seen then return seen == origin end
  end
  local key, exp = tag .. plan.ws, plan.xs
  if long then key, exp = tag .. plan.wl, plan.xl end
  redis.call('HSET', key, digest, origin)
  redis.call('EXPIREAT', key, exp)
  return true
end

-- >>> shared with forget.lua
-- 4. Customer records: {ts1, kind1, day1, ts2, ...}, the user's signups (kind 0) and
--    cancellations (kind 1) with their local day.
local function load(bkey, user)
  local v = redis.call('HGET', bkey, user)
  if v then return cmsgpack.unpack(v) end
  return {}
end

local function bitmap_expiry(day) return (day + plan.bd + 2) * 86400 end

-- A user's contribution to a day-indexed figure is a step function: a list of
-- {point, v1, v2} meaning (v1, v2) from that point until the next; 0 before the first.
local function value_at(steps, p, j)
  local v = 0
  for _, s in ipairs(steps) do
    if s[1] <= p then v = s[j] else break end
  end
  return v
end

local function sorted_unique(list)
  table.sort(list)
  local out, last = {}, nil
  for _, x in ipairs(list) do
    if x ~= last then out[#out + 1] = x; last = x end
  end
  return out
end

-- Churn, by window-start day w: D = the user is a customer at 00:00 of w (latest
-- signup/cancellation on an earlier day is a signup; events are ordered by ts with the
-- cancellation last on equal ts), N = D and the user has a cancellation on one of the
-- CHURN_DAYS days from w (the window's own days: so the churn of a past day does not
-- count cancellations after it).
local CHURN_DAYS = 30
local function churn_steps(rec)
  local ev = {}
  for i = 1, #rec, 3 do ev[#ev + 1] = {rec[i], rec[i + 1], rec[i + 2]} end
  if #ev == 0 then return {} end
  table.sort(ev, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  local cancels = {}
  local pts = {}
  for _, e in ipairs(ev) do
    pts[#pts + 1] = e[3] + 1
    if e[2] == 1 then
      cancels[#cancels + 1] = e[3]
      pts[#pts + 1] = e[3] - (CHURN_DAYS - 1)
    end
  end
  local steps = {}
  for _, w in ipairs(sorted_unique(pts)) do
    local st = -1
    for _, e in ipairs(ev) do
      if e[3] <= w - 1 then st = e[2] else break end
    end
    local d, n = 0, 0
    if st == 0 then
      d = 1
      for _, c in ipairs(cancels) do
        if c >= w and c <= w + CHURN_DAYS - 1 then n = 1; break end
      end
    end
    steps[#steps + 1] = {w, d, n}
  end
  return steps
end

local cust = tag .. 'cust'

-- Adds (new - old) to the difference arrays `n1:` and `n2:` of hash `hkey` (default `cust`).
local function apply_diff(old, new, n1, n2, hkey)
  hkey = hkey or cust
  local pts = {}
  for _, s in ipairs(old) do pts[#pts + 1] = s[1] end
  for _, s in ipairs(new) do pts[#pts + 1] = s[1] end
  if #pts == 0 then return end
  pts = sorted_unique(pts)
  local prev1, prev2 = 0, 0
  for _, p in ipairs(pts) do
    local g1 = value_at(new, p, 2) - value_at(old, p, 2)
    local g2 = value_at(new, p, 3) - value_at(old, p, 3)
    if g1 ~= prev1 then redis.call('HINCRBY', hkey, n1 .. p, g1 - prev1); prev1 = g1 end
    if g2 ~= prev2 then redis.call('HINCRBY', hkey, n2 .. p, g2 - prev2); prev2 = g2 end
  end
end
-- <<< shared with forget.lua

-- 5. Numbers for the users the caller has none for: HSETNX first, one call for a new
--    user (the usual case), two for one given earlier. Active users get theirs here; a
--    signup's user only once its event is claimed (step 7), so a repeated event id never
--    leaves its user's id in the number map.
local num, given = {}, {}
local seq = tag .. 'seq'
local next_n, first_n
local function number_of(bucket, user)
  if next_n == nil then
    next_n = tonumber(redis.call('GET', seq) or '0')
    first_n = next_n
  end
  local n = string.format('%d', next_n)
  if redis.call('HSETNX', tag .. 'n:' .. bucket, user, n) == 1 then
    next_n = next_n + 1
  else
    n = redis.call('HGET', tag .. 'n:' .. bucket, user)
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
  local key, nums = tag .. 'a:' .. b[i], b[i + 1]
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
  local scratch = tag .. 'scratch'
  for i = 1, #bf, 3 do
    local key = tag .. 'a:' .. bf[i]
    redis.call('DEL', scratch)
    redis.call('SETRANGE', scratch, bf[i + 1], ARGV[bf[i + 2]])
    redis.call('BITOP', 'OR', key, key, scratch)
    redis.call('DEL', scratch)
    redis.call('EXPIREAT', key, bitmap_expiry(bf[i]))
  end
end

-- >>> shared with forget.lua
-- Churn by segment (STREAM_SEGMENTS): a customer at 00:00 of w counts in the segment of
-- their latest signup dated before w (by ts; on equal ts the greater value). `srec` =
-- {ts1, day1, values1, ...}: the user's signups folded with segments, values a map
-- dimension -> value. Returns 'dim:value' -> steps {w, D, N} (the churn steps of the
-- user, kept only in the segment the user is in at w).
local function seg_churn_steps(rec, srec)
  local out = {}
  if #srec == 0 then return out end
  local base = churn_steps(rec)
  local dims, have = {}, {}
  for i = 3, #srec, 3 do
    for d, _ in pairs(srec[i]) do
      if not have[d] then have[d] = true; dims[#dims + 1] = d end
    end
  end
  for _, dim in ipairs(dims) do
    local per = {}
    for _, st in ipairs(base) do
      local w, val = st[1], nil
      if st[2] == 1 then
        local bts
        val = 'none'
        for i = 1, #srec, 3 do
          if srec[i + 1] <= w - 1 then
            local v = srec[i + 2][dim] or 'none'
            if bts == nil or srec[i] > bts or (srec[i] == bts and v > val) then
              bts, val = srec[i], v
            end
          end
        end
        if not per[val] then per[val] = {} end
      end
      for v, steps in pairs(per) do
        if v == val then steps[#steps + 1] = st else steps[#steps + 1] = {w, 0, 0} end
      end
    end
    for v, steps in pairs(per) do out[dim .. ':' .. v] = steps end
  end
  return out
end
-- <<< shared with forget.lua

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
local scust = tag .. 'scust'
for i = 1, #c, 8 do
  if claim(c[i + 6], c[i + 7], true) then
    local user, bkey = c[i], tag .. 'u:' .. c[i + 1]
    local rec = load(bkey, user)
    local old_churn = churn_steps(rec)
    local skey, srec, old_seg
    if cs then
      skey = tag .. 'us:' .. c[i + 1]
      local packed = redis.call('HGET', skey, user)
      srec = packed and cmsgpack.unpack(packed) or {}
      old_seg = seg_churn_steps(rec, srec)
    end
    rec[#rec + 1] = c[i + 2]
    rec[#rec + 1] = c[i + 3]
    rec[#rec + 1] = c[i + 4]
    apply_diff(old_churn, churn_steps(rec), 'D:', 'N:')
    redis.call('HSET', bkey, user, cmsgpack.pack(rec))
    if c[i + 3] == 0 then
      local sg = tag .. 'sg:' .. c[i + 4]
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
        local key = tag .. 'ssg:' .. c[i + 4]
        redis.call('HSET', key, c[i + 5] ~= '' and c[i + 5] or num[user],
                   cmsgpack.pack(day_segments(srec, c[i + 4])))
        redis.call('EXPIREAT', key, bitmap_expiry(c[i + 4]))
      end
      local new_seg = seg_churn_steps(rec, srec)
      for k, steps in pairs(new_seg) do
        apply_diff(old_seg[k] or {}, steps, 'sD:' .. k .. ':', 'sN:' .. k .. ':', scust)
      end
      for k, steps in pairs(old_seg) do
        if not new_seg[k] then
          apply_diff(steps, {}, 'sD:' .. k .. ':', 'sN:' .. k .. ':', scust)
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
    local key = tag .. 'cnt:' .. n[i]
    local per = sums[key]
    if not per then
      per = {}
      sums[key] = per
      expires[key] = (n[i] + plan.r + 2) * 86400
      cdays[key] = n[i]
    end
    local f = n[i + 1]
    if type(f) == 'table' then  -- with segments: {field, segment fields...}
      local skey = tag .. 'scnt:' .. n[i]
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
local cw0 = redis.call('HMGET', tag .. 'cw:0', '@', 'from')
local anchor, from = tonumber(cw0[1]), tonumber(cw0[2]) or 0
if anchor then
  for key, day in pairs(cdays) do
    for k = 0, 1 do
      if day <= anchor - k and day > anchor - k - 30 and day >= from then
        local cw = tag .. 'cw:' .. k
        for f, v in pairs(sums[key]) do
          local kind = string.sub(f, 1, 2)
          if kind == 'v:' then
            redis.call('HINCRBY', cw, '#v', v)
            redis.call('ZINCRBY', tag .. 'cwv:' .. k, v, string.sub(f, 3))
          elseif kind == 'c:' then
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
  redis.call('SADD', tag .. 'wset', plan.w)
  redis.call('EXPIRE', tag .. 'wset', plan.wt)
end
return {1, applied, count, given}
