-- hll.lua: merge one batch's daily HyperLogLogs, built by the worker in Redis's dense
-- encoding (stream/_redisformats.c), into the daily keys: one PFMERGE per day instead of
-- a PFADD argument per member. PFMERGE is idempotent like PFADD, so this runs outside the
-- atomic apply call; it is a script so the scratch key never outlives it (and no other
-- client can write it in between).
--
-- KEYS[1]  scratch key, in the slot of the daily keys (they share the {h} hash tag)
-- ARGV     key, unix expiry, dense HyperLogLog, key, ...

local tmp = KEYS[1]
for i = 1, #ARGV, 3 do
  local key = ARGV[i]
  if redis.call('EXISTS', key) == 0 then
    redis.call('SET', key, ARGV[i + 2])
  else
    redis.call('SET', tmp, ARGV[i + 2])
    redis.call('PFMERGE', key, tmp)
    redis.call('DEL', tmp)
  end
  redis.call('EXPIREAT', key, ARGV[i + 1])
end
return #ARGV / 3
