-- _claim.lua: claim an event id, put in at `--@include _claim.lua` by
-- stream/store/scripts.py into lua/apply.lua and lua/claim.lua, so a claim decides the
-- same in both. Expects the locals `plan` (il id-key suffixes to look in, ws/wl short /
-- long id key to write, xs/xl their expiry) and `tag`.
-- The first message with an id wins; a redelivery of that same message (same origin) is
-- still allowed through. Returns true to apply, false for a duplicate.
-- The id keys to look in are found once per call: of the generations that may hold an
-- id, only those that exist (often one or two of the 22 of the default lateness), and
-- always the two written to, which this call may create. No other key can appear while
-- a script runs, so skipping the rest changes no answer, and a new id costs Redis as many
-- HGETs as there are keys rather than one per generation.
local look_keys = nil
local function claim_id(digest, origin, long)
  if look_keys == nil then
    look_keys = {}
    for _, g in ipairs(plan.il) do
      local key = tag .. g
      if g == plan.ws or g == plan.wl or redis.call('EXISTS', key) == 1 then
        look_keys[#look_keys + 1] = key
      end
    end
  end
  for _, key in ipairs(look_keys) do
    local seen = redis.call('HGET', key, digest)
    if seen then return seen == origin end
  end
  local key, exp = tag .. plan.ws, plan.xs
  if long then key, exp = tag .. plan.wl, plan.xl end
  redis.call('HSET', key, digest, origin)
  redis.call('EXPIREAT', key, exp)
  return true
end
