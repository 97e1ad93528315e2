-- hll.lua: one batch's PFADDs into the daily HyperLogLogs, from one msgpack argument.
-- A script rather than PFADD commands in the pipeline only for cost: the client then
-- encodes the members once (msgpack) instead of packing each as a command argument.
-- PFADD is idempotent, so this runs outside the atomic apply call.
--
-- KEYS[1]  one of the keys written (routes the call: they all share the {h} hash tag)
-- ARGV[1]  msgpack list: key, unix expiry, {member, ...}, key, ...

local plan = cmsgpack.unpack(ARGV[1])
for i = 1, #plan, 3 do
  local key, members = plan[i], plan[i + 2]
  for j = 1, #members, 4000 do
    redis.call('PFADD', key, unpack(members, j, math.min(j + 3999, #members)))
  end
  redis.call('EXPIREAT', key, plan[i + 1])
end
return #plan / 3
