-- claim.lua: remember event ids that live in this shard, for events whose writes go to
-- another shard (Redis Cluster with more than one shard). The first message with an id
-- wins; a redelivery of that same message (same origin) is still allowed through, so a
-- crash between this call and the apply call loses nothing.
--
-- KEYS[1]  any key of the shard (routes the call; all keys touched share its hash tag)
-- ARGV[1]  msgpack map built by stream/store/wire.py (`encode_claims`): t prefix, il
--          id-key suffixes to look in, ws/wl keys to write, xs/xl their expiry, c flat
--          list: digest, origin, long (0/1), ...
-- Returns a list of 1 (apply) / 0 (duplicate), one per claim.

local plan = cmsgpack.unpack(ARGV[1])
local tag = plan.t
--@include _claim.lua
local out = {}
local c = plan.c
for i = 1, #c, 3 do
  out[#out + 1] = claim_id(c[i], c[i + 1], c[i + 2] == 1) and 1 or 0
end
return out
