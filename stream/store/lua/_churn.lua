-- _churn.lua: a customer's records and churn steps, put in at `--@include _churn.lua`
-- by stream/store/scripts.py into lua/apply.lua and lua/forget.lua: one definition of a
-- customer's contribution to the difference arrays, so what forget takes out is exactly
-- what apply put in. Expects the locals `plan` (with `bd`) and `tag`.

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

local cust = tag .. K.cust

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
