-- offsets.lua: move one partition's stored offset in one shard, with a counter, in one
-- atomic step (a partition found outside the log Kafka holds: see stream/offsetrange.py).
--
-- KEYS[1]  the shard's offsets hash; KEYS[2] the shard's totals hash (same hash tag)
-- ARGV[1]  src (`<topic>/<partition>`)
-- ARGV[2]  the offset the caller read (-1: none)
-- ARGV[3]  the new offset (-1: delete the field, the partition starts over)
-- ARGV[4]  totals field to increment, ARGV[5] the increment (0: none)
-- Returns {1} when moved, {0, stored} when the stored offset is not ARGV[2] (another
-- worker moved it meanwhile: nothing is written, the caller reloads).

local cur = redis.call('HGET', KEYS[1], ARGV[1])
local curn = -1
if cur then curn = tonumber(cur) end
if curn ~= tonumber(ARGV[2]) then
  return {0, curn}
end
if tonumber(ARGV[3]) < 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
local n = tonumber(ARGV[5])
if n > 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[4], n)
end
return {1}
