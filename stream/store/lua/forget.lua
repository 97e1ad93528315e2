-- forget.lua: erase users from one shard, atomically (stream/forget.py, docs/privacy.md).
--
-- KEYS[1]  the shard's offsets hash (routes the call; every key here shares its tag)
-- ARGV[1]  msgpack map (stream/store/wire.py encode_forget): t key prefix of the shard, u flat list bucket, user, ... (user
--          ids as stored: hashed with STREAM_USER_ID_KEY), d {first day, last day} of
--          the activity and signup bitmaps that may exist, s 1 with segments
-- Returns the number of the users the shard held anything about.
--
-- For each user:
-- 1. the churn difference arrays lose the user's steps (`cust`, and `scust` by segment:
--    the same functions as lua/apply.lua, lua/_churn.lua), then the customer
--    and segment records go;
-- 2. the user's bit is cleared in every activity and signup bitmap, then the number map
--    entry goes: the number is never given again (`seq` only grows), so a later event of
--    the user gets a new number and counts as a new user's;
-- 3. when anyone was erased: the count goes to the totals (`fu`), and every witness of the
--    shard is deleted, with a marker `wf:<token>` telling its caller why: the caller's
--    next apply call is refused, and it re-reads its batch with no cached numbers (a
--    cached number of a forgotten user would otherwise set bits for nobody).
-- Event-id digests stay: they hold no user id, and a redelivered old event must stay a
-- duplicate.

local plan = cmsgpack.unpack(ARGV[1])
local tag = plan.t

--@include _churn.lua

local u = plan.u
local scust = tag .. K.scust

-- the bitmaps of the shard that exist, and the signup-segment hashes (`ssg:<day>`, bit
-- number -> segment values), found once per call
local bitmaps, signup_segments = {}, {}
for day = plan.d[1], plan.d[2] do
  for _, kind in ipairs({K.a, K.sg}) do
    local key = tag .. kind .. day
    if redis.call('EXISTS', key) == 1 then bitmaps[#bitmaps + 1] = key end
  end
  local key = tag .. K.ssg .. day
  if redis.call('EXISTS', key) == 1 then signup_segments[#signup_segments + 1] = key end
end

local erased = 0
for i = 1, #u, 2 do
  local bucket, user = u[i], u[i + 1]
  local found = false
  -- 1. customer and segment records
  local bkey = tag .. K.u .. bucket
  local rec = load(bkey, user)
  if #rec > 0 then
    found = true
    apply_diff(churn_steps(rec), {}, F.customers, F.churned)
    local skey = tag .. K.us .. bucket
    local packed = redis.call('HGET', skey, user)
    if packed then
      for k, steps in pairs(seg_churn_steps(rec, cmsgpack.unpack(packed))) do
        apply_diff(steps, {}, F.seg_customers .. k .. ':',
                   F.seg_churned .. k .. ':', scust)
      end
      redis.call('HDEL', skey, user)
    end
    redis.call('HDEL', bkey, user)
  end
  -- 2. bits, then the number
  local nkey = tag .. K.n .. bucket
  local num = redis.call('HGET', nkey, user)
  if num then
    found = true
    for _, key in ipairs(bitmaps) do
      -- GETBIT first: SETBIT past a bitmap's end would lengthen it
      if redis.call('GETBIT', key, num) == 1 then redis.call('SETBIT', key, num, 0) end
    end
    for _, key in ipairs(signup_segments) do redis.call('HDEL', key, num) end
    redis.call('HDEL', nkey, user)
  end
  if found then erased = erased + 1 end
end

-- 3. the count, and the witnesses of every caller that may cache numbers here
if erased > 0 then
  redis.call('HINCRBY', tag .. K.tot, F.forgotten, erased)
  local wset = tag .. K.wset
  for _, token in ipairs(redis.call('SMEMBERS', wset)) do
    if redis.call('DEL', tag .. K.w .. token) == 1 then
      redis.call('SET', tag .. K.wf .. token, '1', 'EX', 7 * 86400)
    else
      redis.call('SREM', wset, token)
    end
  end
end
return erased
