-- _claim.lua: claim an event id, put in at `--@include _claim.lua` by
-- stream/store/scripts.py into lua/apply.lua and lua/claim.lua, so a claim decides the
-- same in both. Expects the locals `plan` (il id-key suffixes to look in, ws/wl short /
-- long id key to write, xs/xl their expiry) and `tag`.
-- The first message with an id wins; a redelivery of that same message (same origin) is
-- still allowed through. Returns true to apply, false for a duplicate.
local function claim_id(digest, origin, long)
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
