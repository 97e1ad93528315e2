-- campaigns.lua: bring one shard's rolling campaign windows to `today`, then return the
-- top campaigns of each, so a figure read never reads every campaign's per-day counters
-- (a stream of 100k campaign names would make that 6M hash fields a read).
--
-- KEYS[1]  the shard's offsets hash (routes the call; every key here shares its tag)
-- ARGV[1]  key prefix of the shard, e.g. "es:{es0}:"
-- ARGV[2]  today (local day number)
-- ARGV[3]  max series: campaigns to return per window
--
-- Window k (0 or 1) is the days from `from` on of the 30 days ending `anchor - k`:
-- `cw:<k>` hash ('#v', '#c' the window's visits and conversions of every campaign;
-- 'c:<name>' a campaign's conversions; '@' and 'from' in `cw:0`) and `cwv:<k>` sorted set
-- (name -> visits). lua/apply.lua adds each batch's counts of days inside a window; this
-- script moves the windows one day per call (add the day that enters, subtract the one
-- that leaves: at most four `cnt:` hashes), so no call holds Redis for long whatever the
-- campaigns. Windows not kept yet, or more than 31 days behind, start empty 31 days back
-- with `from` = today - 30 and fill a day per call up to today.
--
-- Returns {0} when the windows are already past `today` (the caller then sums the per-day
-- counters itself), {2} when they are not at `today` yet (the caller calls again), else
-- {1, top0, top1}, each top {visits, conversions, name, visits,
-- conversions, ...}: the window's totals, then at most `max series` campaigns with at
-- least one visit, most visits first, ties by name (byte order of UTF-8 is code point
-- order), never `other` nor a name longer than 128 characters (stream/campaigns.py).

local tag = ARGV[1]
local today = tonumber(ARGV[2])
local max_series = tonumber(ARGV[3])
local h0 = tag .. K.cw .. 0

local function add_day(k, day, sign)
  local cw, cwv = tag .. K.cw .. k, tag .. K.cwv .. k
  local flat = redis.call('HGETALL', tag .. K.cnt .. day)
  for i = 1, #flat, 2 do
    local f = flat[i]
    local kind = string.sub(f, 1, 2)  -- F.visit and F.conversion are 2 characters
    local v = sign * tonumber(flat[i + 1])
    if kind == F.visit then
      redis.call('HINCRBY', cw, '#v', v)
      local name = string.sub(f, 3)
      if tonumber(redis.call('ZINCRBY', cwv, v, name)) <= 0 then
        redis.call('ZREM', cwv, name)
      end
    elseif kind == F.conversion then
      redis.call('HINCRBY', cw, '#c', v)
      if redis.call('HINCRBY', cw, f, v) <= 0 then redis.call('HDEL', cw, f) end
    end
  end
end

local state = redis.call('HMGET', h0, '@', 'from')
local anchor, from = tonumber(state[1]), tonumber(state[2]) or 0
if anchor and anchor > today then return {0} end
if anchor == nil or today - anchor > 31 then
  redis.call('DEL', h0, tag .. K.cw .. 1, tag .. K.cwv .. 0, tag .. K.cwv .. 1)
  from = today - 30
  anchor = from - 1
  redis.call('HSET', h0, '@', anchor, 'from', from)
end
if anchor < today then
  anchor = anchor + 1
  for k = 0, 1 do
    if anchor - k >= from then add_day(k, anchor - k, 1) end
    if anchor - k - 30 >= from then add_day(k, anchor - k - 30, -1) end
  end
  redis.call('HSET', h0, '@', anchor)
  if anchor < today then return {2} end
end

-- characters, not bytes: the UTF-8 continuation bytes are not counted
local function chars(s) return #s - select(2, string.gsub(s, '[\128-\191]', '')) end

local function top(k)
  local cw, cwv = tag .. K.cw .. k, tag .. K.cwv .. k
  local out = {tonumber(redis.call('HGET', cw, '#v') or '0'),
               tonumber(redis.call('HGET', cw, '#c') or '0')}
  local picked = 0
  local hi = '+inf'
  -- one score at a time, best first; within a score, names in order, as many as needed
  while picked < max_series do
    local head = redis.call('ZREVRANGEBYSCORE', cwv, hi, '(0', 'WITHSCORES', 'LIMIT', 0, 1)
    if #head == 0 then break end
    local score = head[2]
    local offset = 0
    while picked < max_series do
      local page = redis.call('ZRANGEBYSCORE', cwv, score, score, 'LIMIT', offset,
                              max_series - picked)
      if #page == 0 then break end
      offset = offset + #page
      for _, name in ipairs(page) do
        if name ~= F.other_campaign and chars(name) <= F.campaign_name_max then
          picked = picked + 1
          out[#out + 1] = name
          out[#out + 1] = tonumber(score)
          out[#out + 1] = tonumber(redis.call('HGET', cw, F.conversion .. name) or '0')
        end
      end
    end
    hi = '(' .. score
  end
  return out
end

return {1, top(0), top(1)}
